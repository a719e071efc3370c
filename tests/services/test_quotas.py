"""Per-user quotas: which limit holds for a user, what counts against it, and the refusals."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.files.uploadedfile import SimpleUploadedFile

from batchsite.env import Reader, read_limits
from jobs.models import Batch, File, Priority, Quota
from jobs.services import batches as batch_service
from jobs.services import files as file_service
from jobs.services import quotas
from jobs.services.batches import BatchRequest
from tests.conftest import CHAT_MODEL, chat_line, housekeeper_pass, jsonl

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("models")]


def make_user(name: str, **extra: Any) -> Any:
    return get_user_model().objects.create_user(username=name, **extra)


def submit(user: Any, lines: int = 2) -> Batch:
    upload = SimpleUploadedFile("in.jsonl", jsonl([chat_line(i) for i in range(lines)]))
    return batch_service.create_batch_from_upload(user, upload, BatchRequest(None, "24h", model=CHAT_MODEL))


def test_settings_apply_when_no_quota_row_exists(limits):
    limits(user_max_queued_batches=4, user_max_queued_requests=40, user_max_stored_bytes=400)
    assert quotas.limits_for(make_user("alice")) == quotas.Limits(4, 40, 400)


def test_a_group_row_beats_the_settings_and_the_most_generous_group_wins(limits):
    limits(user_max_queued_batches=4, user_max_queued_requests=40, user_max_stored_bytes=400)
    alice = make_user("alice")
    small, big = Group.objects.create(name="small"), Group.objects.create(name="big")
    Quota.objects.create(group=small, max_queued_batches=1)
    Quota.objects.create(group=big, max_queued_batches=9, max_stored_bytes=10**18)
    alice.groups.add(small, big)
    assert quotas.limits_for(alice) == quotas.Limits(9, 40, 10**18)


def test_the_users_own_row_beats_the_group_even_when_smaller(limits):
    limits(user_max_queued_batches=4)
    alice = make_user("alice")
    team = Group.objects.create(name="team")
    Quota.objects.create(group=team, max_queued_batches=9, max_queued_requests=90)
    alice.groups.add(team)
    Quota.objects.create(user=alice, max_queued_batches=0)
    limits_now = quotas.limits_for(alice)
    assert limits_now.max_queued_batches == 0  # 0 is a limit, not "unset"
    assert limits_now.max_queued_requests == 90  # unset on the user's row: the group's


@pytest.mark.parametrize("global_batches", ["2", "3", "10"])
def test_with_default_settings_one_user_cannot_take_every_global_slot(settings, global_batches):
    settings.BATCHSITE = read_limits(Reader({"BATCHSITE_MAX_QUEUED_BATCHES": global_batches}))
    assert settings.BATCHSITE.user_max_queued_requests < settings.BATCHSITE.max_queued_requests
    alice = make_user("alice")
    with pytest.raises(quotas.QuotaReached):
        for _ in range(int(global_batches)):
            submit(alice)
    assert Batch.objects.filter(owner=alice).count() < int(global_batches)
    submit(make_user("bob"))  # a global slot is left for bob


def test_usage_counts_active_batches_their_lines_and_live_files(limits):
    alice, bob = make_user("alice"), make_user("bob")
    first = submit(alice, lines=3)
    submit(alice, lines=2)
    submit(bob, lines=7)
    batch_service.cancel_batch(first)
    housekeeper_pass()  # nothing of it ran: the housekeeper ends the cancel
    usage = quotas.usage_for(alice)
    assert (usage.queued_batches, usage.queued_requests) == (1, 2)
    assert usage.stored_bytes == sum(File.objects.filter(owner=alice).values_list("bytes", flat=True))


def test_at_the_batch_quota_a_submit_is_refused_with_usage_and_limit(limits):
    alice = make_user("alice")
    Quota.objects.create(user=alice, max_queued_batches=2)
    submit(alice)
    submit(alice)
    before = (Batch.objects.count(), File.objects.count())
    with pytest.raises(quotas.QuotaReached) as refused:
        submit(alice)
    assert refused.value.code == "user_queue_full"
    assert refused.value.message.startswith("You have 2 batches queued or running; your limit is 2.")
    assert (Batch.objects.count(), File.objects.count()) == before
    submit(make_user("bob"))  # bob is not held back by alice's quota


def test_the_request_quota_counts_the_new_batchs_lines(limits):
    alice = make_user("alice")
    Quota.objects.create(user=alice, max_queued_requests=5)
    submit(alice, lines=3)
    with pytest.raises(quotas.QuotaReached) as refused:
        submit(alice, lines=3)
    assert refused.value.code == "user_too_many_queued_requests"
    assert "3 requests" in refused.value.message and "5" in refused.value.message
    submit(alice, lines=2)  # exactly at the quota is allowed


def test_a_zero_quota_refuses_everything_and_a_huge_one_nothing(limits):
    alice, bob = make_user("alice"), make_user("bob")
    Quota.objects.create(user=alice, max_queued_batches=0, max_stored_bytes=0)
    Quota.objects.create(user=bob, max_queued_batches=10**9, max_queued_requests=10**18, max_stored_bytes=10**18)
    with pytest.raises(quotas.QuotaReached):
        submit(alice)
    assert not File.objects.exists()
    for _ in range(3):
        submit(bob)


def test_the_storage_quota_refuses_an_upload_before_it_is_stored(limits, settings):
    alice = make_user("alice")
    content = jsonl([chat_line(0)])
    Quota.objects.create(user=alice, max_stored_bytes=len(content) * 2)
    for _ in range(2):
        file_service.store_upload(alice, SimpleUploadedFile("a.jsonl", content), "batch")
    with pytest.raises(quotas.QuotaReached) as refused:
        file_service.store_upload(alice, SimpleUploadedFile("a.jsonl", content), "batch")
    assert refused.value.code == "user_storage_full"
    assert f"You keep {2 * len(content)} bytes" in refused.value.message
    assert File.objects.count() == 2
    assert len(settings.TEST_STORAGE.keys(settings)) == 2


def test_deleted_files_free_storage(limits):
    alice = make_user("alice")
    content = jsonl([chat_line(0)])
    Quota.objects.create(user=alice, max_stored_bytes=len(content))
    file = file_service.store_upload(alice, SimpleUploadedFile("a.jsonl", content), "batch")
    file_service.delete_file(file)
    file_service.store_upload(alice, SimpleUploadedFile("a.jsonl", io.BytesIO(content).read()), "batch")


@pytest.mark.parametrize("value", [1, 0, True, [], {}, ["high"], {"a": 1}, "HIGH", "urgent", "", "\ud800", "high\x00"])
def test_a_priority_that_is_not_one_of_the_names_is_refused(value):
    with pytest.raises(quotas.InvalidRequest) as refused:
        quotas.parse_priority(value, make_user("alice", is_staff=True))
    assert refused.value.param == "priority"
    refused.value.message.encode("utf-8")  # a lone surrogate is not echoed raw


def test_high_priority_needs_staff_or_the_permission():
    alice = make_user("alice")
    with pytest.raises(quotas.InvalidRequest) as refused:
        quotas.parse_priority("high", alice)
    assert refused.value.param == "priority" and refused.value.code == "priority_not_allowed"
    assert quotas.parse_priority("low", alice) == Priority.LOW
    assert quotas.parse_priority(None, alice) == Priority.NORMAL
    assert quotas.parse_priority("high", make_user("root", is_staff=True)) == Priority.HIGH
    carol = make_user("carol")
    carol.user_permissions.add(Permission.objects.get(codename="high_priority"))
    carol = get_user_model().objects.get(pk=carol.pk)  # permissions are cached per instance
    assert quotas.parse_priority("high", carol) == Priority.HIGH
