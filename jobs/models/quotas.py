from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models


class Quota(models.Model):
    """Per-user or per-group (a team) overrides of the per-user quotas and the fair-share weight.

    Exactly one of ``user`` and ``group`` is set. A limit left empty falls back
    to the group's, then to the BATCHSITE_USER_* setting (jobs.services.quotas
    resolves them). The global BATCHSITE_MAX_* limits still hold for everyone together.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="quota"
    )
    group = models.OneToOneField(Group, on_delete=models.CASCADE, null=True, blank=True, related_name="quota")
    max_queued_batches = models.PositiveIntegerField(
        null=True, blank=True, help_text="Queued or running batches at once; empty: the group's or the setting"
    )
    max_queued_requests = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Requests in queued or running batches; empty: the group's or the setting"
    )
    max_stored_bytes = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Bytes of files kept; empty: the group's or the setting"
    )
    weight = models.FloatField(
        null=True,
        blank=True,
        help_text="Share of worker time relative to others (default 1; 2 gets twice a weight-1 user's)",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(user__isnull=False, group__isnull=True) | models.Q(user__isnull=True, group__isnull=False)
                ),
                name="quota_user_xor_group",
            ),
            models.CheckConstraint(
                condition=models.Q(weight__isnull=True) | models.Q(weight__gt=0, weight__lte=1000),
                name="quota_weight_range",
            ),
        ]

    def __str__(self) -> str:
        return f"quota for {self.user or self.group}"


class ShareUsage(models.Model):
    """Worker time a user's chunks have had, decayed (half-life BATCHSITE_FAIR_HALF_LIFE_SECONDS).

    ``seconds`` is the decayed total as of ``updated_at`` (database time); a
    chunk's run seconds are added when the chunk ends or is handed back.
    Fair share reads it to find the user furthest below their share.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True)
    seconds = models.FloatField(default=0.0)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.user}: {self.seconds:.0f} s"


class WorkerTime(models.Model):
    """One claim's worker time: from a chunk's claim to its end or hand-back (database times).

    Added when the claim ends (with ShareUsage's decayed seconds) and never
    changed, so the dashboard's last hour is exact, and the per-user sums only
    grow (/metrics' ``batchsite_user_worker_seconds_total`` is a true counter).
    A chunk's own row cannot say this: a next claim overwrites its ``claimed_at``.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(db_index=True)
    seconds = models.FloatField()

    def __str__(self) -> str:
        return f"{self.user_id}: {self.seconds:.1f} s to {self.ended_at:%Y-%m-%d %H:%M:%S}"
