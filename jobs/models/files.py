from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from jobs.models.ids import new_file_id


class FilePurpose(models.TextChoices):
    BATCH = "batch"
    # A batch's output and its error file alike, as OpenAI labels both (the SDKs' FileObject
    # allows no other purpose for them, and files.list(purpose="batch_output") lists both).
    BATCH_OUTPUT = "batch_output"


class FileQuerySet(models.QuerySet["File"]):
    def owned_by(self, user: object) -> FileQuerySet:
        return self.filter(owner=user)

    def live(self, now: datetime | None = None) -> FileQuerySet:
        """Not expired: an expired file is gone for its owner even before its bytes are deleted."""
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now or timezone.now()))

    def expired(self, now: datetime | None = None) -> FileQuerySet:
        return self.filter(expires_at__lte=now or timezone.now())


class File(models.Model):
    """A stored JSONL file: a batch input, or a batch's output or error file."""

    id = models.CharField(primary_key=True, max_length=40, default=new_file_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="files")
    purpose = models.CharField(max_length=20, choices=FilePurpose.choices)
    filename = models.CharField(max_length=255)
    bytes = models.BigIntegerField(default=0)
    # Path relative to the default storage (var/files/ on the laptop default).
    storage_name = models.CharField(max_length=500)
    # A default rather than auto_now_add, so that expires_at can be computed from the same instant.
    created_at = models.DateTimeField(default=timezone.now)
    # OpenAI's expires_after: past this the file answers 404 and the retention
    # sweep deletes it (unless an unfinished batch still reads it). None: kept.
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = FileQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "created_at"]), models.Index(fields=["expires_at"])]

    def __str__(self) -> str:
        return f"{self.id} ({self.filename})"
