"""Worker time per user, for fair share: decayed run seconds and the weights they are divided by.

A user's usage is the run seconds of their chunks' claims (from claim to end
or hand-back), decayed with the half-life BATCHSITE_FAIR_HALF_LIFE_SECONDS so
an hour-old burst counts half as much as one just now. A row (ShareUsage)
keeps the decayed total as of its ``updated_at``, both written together in a
guarded UPDATE, so two workers ending chunks of one user at once never lose
each other's seconds. Times are the database's (jobs.models.clock).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction

from jobs.models import Chunk
from jobs.models.clock import db_now
from jobs.models.quotas import Quota, ShareUsage, WorkerTime

log = logging.getLogger("batchsite.scheduler")

DEFAULT_WEIGHT = 1.0
# A guarded UPDATE that loses a race reads again; more losses than this in a
# row would take a storm of ends for one user: the seconds are then dropped
# (fair share drifts a little; the claim that ended is not held up).
_MAX_TRIES = 20


def decayed(seconds: float, since: datetime, now: datetime, half_life: float | None = None) -> float:
    """``seconds`` as of ``since``, decayed to ``now`` (never grown by a clock that went back)."""
    half = half_life if half_life is not None else settings.BATCHSITE_SCHEDULER.fair_half_life_seconds
    elapsed = max((now - since).total_seconds(), 0.0)
    return seconds * 0.5 ** (elapsed / half)


def record(user_id: int, seconds: float) -> None:
    """Add ``seconds`` of worker time to ``user_id``'s decayed usage."""
    if not seconds > 0:  # also refuses NaN
        return
    for _ in range(_MAX_TRIES):
        now = db_now()
        row = ShareUsage.objects.filter(pk=user_id).values_list("seconds", "updated_at").first()
        if row is None:
            try:
                with transaction.atomic():
                    ShareUsage.objects.create(user_id=user_id, seconds=seconds, updated_at=now)
                return
            except IntegrityError:
                continue  # another end created it first: add to theirs
        old, since = row
        # Guarded by the values read: after a concurrent record this misses and reads again.
        changed = ShareUsage.objects.filter(pk=user_id, seconds=old, updated_at=since).update(
            seconds=decayed(old, since, now) + seconds, updated_at=max(now, since)
        )
        if changed:
            return
    log.warning("fair share: %.1f s of user %s's worker time not recorded (concurrent updates)", seconds, user_id)


def record_claim(chunk: Chunk) -> None:
    """Record the run seconds of ``chunk``'s claim (claim to now) for its batch's owner."""
    if chunk.claimed_at is None:
        return
    now = db_now()
    seconds = (now - chunk.claimed_at).total_seconds()
    # The claim loaded its batch (select_related), so this is no extra query there.
    owner = chunk.batch.owner_id
    if seconds > 0:
        # The exact record, for the dashboard's last hour and /metrics' counter (share_report).
        WorkerTime.objects.create(user_id=owner, started_at=chunk.claimed_at, ended_at=now, seconds=seconds)
    record(owner, seconds)


def usage(user_ids: Collection[int], now: datetime | None = None) -> dict[int, float]:
    """Each user's decayed worker seconds as of ``now`` (the database's now by default); 0 for none yet."""
    at = now if now is not None else db_now()
    out = dict.fromkeys(user_ids, 0.0)
    for user_id, seconds, since in ShareUsage.objects.filter(pk__in=list(user_ids)).values_list(
        "user_id", "seconds", "updated_at"
    ):
        out[user_id] = decayed(seconds, since, at)
    return out


def usage_with_running(user_ids: Collection[int], now: datetime) -> dict[int, float]:
    """``usage`` plus the seconds of their claims still running: a user whose first chunks
    are running is not taken for one who has had nothing."""
    used = usage(user_ids, now)
    running = Chunk.objects.running().filter(batch__owner_id__in=list(user_ids), claimed_at__isnull=False)
    for owner, claimed in running.values_list("batch__owner_id", "claimed_at"):
        if claimed is not None:
            used[owner] = used.get(owner, 0.0) + max((now - claimed).total_seconds(), 0.0)
    return used


def weights(user_ids: Collection[int]) -> dict[int, float]:
    """Each user's weight: their own Quota's, else the largest of their groups' (a team), else 1."""
    ids = list(user_ids)
    out = dict.fromkeys(ids, DEFAULT_WEIGHT)
    groups: dict[int, float] = {}
    for user_id, weight in Quota.objects.filter(group__user__in=ids, weight__isnull=False).values_list(
        "group__user", "weight"
    ):
        if weight is not None:
            groups[user_id] = max(weight, groups.get(user_id, weight))
    own = {
        user_id: weight
        for user_id, weight in Quota.objects.filter(user__in=ids).values_list("user_id", "weight")
        if user_id is not None and weight is not None
    }
    for user_id in ids:
        if user_id in own:
            out[user_id] = own[user_id]
        elif user_id in groups:
            out[user_id] = groups[user_id]
    return out
