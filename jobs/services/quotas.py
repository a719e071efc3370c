"""Per-user quotas: what a user may hold at once, and what they hold now.

The global BATCHSITE_MAX_* limits bound everyone together; these bound each
user, so one key holder cannot take every slot. A user's limit is their own
Quota row's value where set, else the most generous of their groups' (a user
in two teams gets the better of the two), else the BATCHSITE_USER_* setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Sum

from jobs.errors import InvalidRequest, LimitReached
from jobs.models import Batch, File, Priority, Quota
from jobs.services.safe_json import has_lone_surrogate, shown

FIELDS = ("max_queued_batches", "max_queued_requests", "max_stored_bytes")
PRIORITY_PERMISSION = "jobs.high_priority"
PRIORITY_NAMES = {choice.label: Priority(choice.value) for choice in Priority}


class QuotaReached(LimitReached):
    """A user is at one of their own quotas (429); the global limits may still have room."""


@dataclass(frozen=True)
class Limits:
    max_queued_batches: int
    max_queued_requests: int
    max_stored_bytes: int


@dataclass(frozen=True)
class Usage:
    queued_batches: int
    queued_requests: int
    stored_bytes: int


def limits_for(user: Any) -> Limits:
    """The user's effective limits: own row, then the most generous group row, then the settings."""
    defaults = settings.BATCHSITE
    own = Quota.objects.filter(user=user).first() if user.pk is not None else None
    groups = list(Quota.objects.filter(group__user=user)) if user.pk is not None else []
    values: dict[str, int] = {}
    for field in FIELDS:
        mine = getattr(own, field, None) if own is not None else None
        if mine is None:
            from_groups = [getattr(q, field) for q in groups if getattr(q, field) is not None]
            mine = max(from_groups) if from_groups else None
        values[field] = mine if mine is not None else getattr(defaults, "user_" + field)
    return Limits(**values)


def usage_for(user: Any) -> Usage:
    """Queued or running batches, the lines of those batches, and the bytes of the user's live files."""
    active = Batch.objects.owned_by(user).active()
    counts = active.aggregate(n=Sum("total"))
    stored = File.objects.owned_by(user).live().aggregate(n=Sum("bytes"))
    return Usage(
        queued_batches=active.count(),
        queued_requests=counts["n"] or 0,
        stored_bytes=stored["n"] or 0,
    )


def check_queue_quota(user: Any, new_requests: int) -> None:
    """Refuse a batch past the user's batch or request quota. Call inside the queue lock
    (batches._lock_queue) with the batch's line count, so two submits cannot both pass."""
    limits, usage = limits_for(user), usage_for(user)
    if usage.queued_batches >= limits.max_queued_batches:
        raise QuotaReached(
            f"You have {usage.queued_batches} batches queued or running; your limit is "
            f"{limits.max_queued_batches}. Try again when one finishes.",
            code="user_queue_full",
        )
    if usage.queued_requests + new_requests > limits.max_queued_requests:
        raise QuotaReached(
            f"You have {usage.queued_requests} requests queued or running; {new_requests} more would pass "
            f"your limit of {limits.max_queued_requests}. Try again when a batch finishes.",
            code="user_too_many_queued_requests",
        )


def check_storage_quota(user: Any, new_bytes: int) -> None:
    """Refuse an upload that would take the user's kept files past their storage quota."""
    limit = limits_for(user).max_stored_bytes
    stored = usage_for(user).stored_bytes
    if stored + new_bytes > limit:
        raise QuotaReached(
            f"You keep {stored} bytes of files; this upload of {new_bytes} bytes would pass your limit of "
            f"{limit} bytes. Delete files you no longer need (DELETE /v1/files/{{file_id}}).",
            code="user_storage_full",
        )


def may_use_high_priority(user: Any) -> bool:
    return bool(user.is_staff or user.has_perm(PRIORITY_PERMISSION))


def parse_priority(value: Any, user: Any) -> Priority:
    """``priority`` as sent (``low``, ``normal``, ``high``; absent is normal), authorized for ``user``."""
    if value is None:
        return Priority.NORMAL
    if not isinstance(value, str) or has_lone_surrogate(value) or value not in PRIORITY_NAMES:
        raise InvalidRequest(
            f"priority must be one of: {', '.join(PRIORITY_NAMES)}; got {shown(value)}.",
            param="priority",
            code="invalid_priority",
        )
    priority = PRIORITY_NAMES[value]
    if priority == Priority.HIGH and not may_use_high_priority(user):
        raise InvalidRequest(
            "priority 'high' is for staff and users with the jobs.high_priority permission; "
            "use 'normal' or 'low', or ask an administrator.",
            param="priority",
            code="priority_not_allowed",
        )
    return priority


def priority_name(value: int) -> str:
    return str(Priority(value).label)


@dataclass(frozen=True)
class UsageRow:
    label: str
    used: int
    limit: int
    bytes: bool = False

    @property
    def percent(self) -> float:
        return 100.0 if self.limit <= 0 else min(100.0, 100.0 * self.used / self.limit)

    @property
    def full(self) -> bool:
        return self.used >= self.limit


def usage_rows(user: Any) -> list[UsageRow]:
    """The user's usage against each quota, for the submit and keys pages."""
    limits, usage = limits_for(user), usage_for(user)
    return [
        UsageRow("Batches queued or running", usage.queued_batches, limits.max_queued_batches),
        UsageRow("Requests queued or running", usage.queued_requests, limits.max_queued_requests),
        UsageRow("Stored files", usage.stored_bytes, limits.max_stored_bytes, bytes=True),
    ]
