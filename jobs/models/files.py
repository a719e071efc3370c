from __future__ import annotations

from django.conf import settings
from django.db import models

from jobs.models.ids import new_file_id


class FilePurpose(models.TextChoices):
    BATCH = "batch"
    BATCH_OUTPUT = "batch_output"
    BATCH_ERROR = "batch_error"


class FileQuerySet(models.QuerySet["File"]):
    def owned_by(self, user: object) -> FileQuerySet:
        return self.filter(owner=user)


class File(models.Model):
    """A stored JSONL file: a batch input, or a batch's output or error file."""

    id = models.CharField(primary_key=True, max_length=40, default=new_file_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="files")
    purpose = models.CharField(max_length=20, choices=FilePurpose.choices)
    filename = models.CharField(max_length=255)
    bytes = models.BigIntegerField(default=0)
    # Path relative to the default storage (var/files/ on the laptop default).
    storage_name = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = FileQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "created_at"])]

    def __str__(self) -> str:
        return f"{self.id} ({self.filename})"
