"""Worker time per user for fair share (jobs/services/share.py), against the database."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User

from jobs.models.clock import db_now
from jobs.models.quotas import Quota, ShareUsage
from jobs.services import share

pytestmark = pytest.mark.django_db


@pytest.fixture
def half_life(settings: Any) -> None:
    settings.BATCHSITE_SCHEDULER = dataclasses.replace(settings.BATCHSITE_SCHEDULER, fair_half_life_seconds=600.0)


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice")


@pytest.fixture
def bob() -> User:
    return User.objects.create_user("bob")


def test_a_user_with_no_recorded_time_has_used_nothing(alice):
    assert share.usage([alice.pk]) == {alice.pk: 0.0}


def test_recorded_seconds_add_up(alice, bob):
    share.record(alice.pk, 30.0)
    share.record(alice.pk, 12.0)
    share.record(bob.pk, 5.0)
    used = share.usage([alice.pk, bob.pk])
    assert used[alice.pk] == pytest.approx(42.0, rel=1e-3)
    assert used[bob.pk] == pytest.approx(5.0, rel=1e-3)


def test_usage_halves_after_one_half_life(alice, half_life):
    share.record(alice.pk, 100.0)
    row = ShareUsage.objects.get(pk=alice.pk)
    later = row.updated_at + timedelta(seconds=600)
    assert share.usage([alice.pk], now=later)[alice.pk] == pytest.approx(50.0)
    assert share.usage([alice.pk], now=row.updated_at + timedelta(seconds=1800))[alice.pk] == pytest.approx(12.5)


def test_a_new_record_decays_the_old_total_first(alice, half_life):
    ShareUsage.objects.create(user=alice, seconds=100.0, updated_at=db_now() - timedelta(seconds=600))
    share.record(alice.pk, 10.0)
    assert ShareUsage.objects.get(pk=alice.pk).seconds == pytest.approx(60.0, rel=1e-3)


@pytest.mark.parametrize("hostile", [0.0, -5.0, float("nan"), float("-inf")])
def test_nothing_is_recorded_for_no_negative_or_nan_seconds(alice, hostile):
    share.record(alice.pk, hostile)
    assert not ShareUsage.objects.filter(pk=alice.pk).exists()


def test_a_clock_gone_back_does_not_grow_usage(alice):
    share.record(alice.pk, 100.0)
    row = ShareUsage.objects.get(pk=alice.pk)
    assert share.usage([alice.pk], now=row.updated_at - timedelta(hours=1))[alice.pk] == pytest.approx(100.0)


def test_weight_defaults_to_one(alice):
    assert share.weights([alice.pk]) == {alice.pk: 1.0}


def test_weight_is_the_users_own_before_their_groups(alice, bob):
    team = Group.objects.create(name="team")
    big = Group.objects.create(name="big")
    alice.groups.add(team, big)
    bob.groups.add(team)
    Quota.objects.create(group=team, weight=2.0)
    Quota.objects.create(group=big, weight=5.0)
    Quota.objects.create(user=bob, weight=0.5)
    assert share.weights([alice.pk, bob.pk]) == {alice.pk: 5.0, bob.pk: 0.5}


def test_a_quota_without_a_weight_falls_back(alice):
    team = Group.objects.create(name="team")
    alice.groups.add(team)
    Quota.objects.create(user=alice, max_queued_batches=3)
    Quota.objects.create(group=team, weight=3.0)
    assert share.weights([alice.pk]) == {alice.pk: 3.0}


def test_other_users_ids_and_unknown_ids_get_the_default(alice):
    Quota.objects.create(user=alice, weight=4.0)
    assert share.weights([10**9]) == {10**9: 1.0}
    assert share.usage([10**9]) == {10**9: 0.0}
