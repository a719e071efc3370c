"""Retention: deleting files whose expires_at has passed.

An expired file is already gone for its owner (``File.objects.live()`` hides
it from every lookup); this deletes its row and bytes for good. The input of a
batch that has not finished is never deleted under it: that file stays until
the batch ends, and a later sweep takes it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import Exists, OuterRef
from django.utils import timezone

from jobs.errors import Conflict
from jobs.models import Batch, File
from jobs.services import files as file_service

log = logging.getLogger("batchsite.retention")

# Rows read per query: a sweep after a long pause (millions of expired files)
# must not load them all at once.
PAGE = 500


def delete_expired_files(now: datetime | None = None) -> int:
    """Delete every expired file not read by an unfinished batch; returns how many went."""
    now = now or timezone.now()
    in_use = Batch.objects.active().filter(input_file_id=OuterRef("pk"))
    deleted = 0
    skipped: set[str] = set()
    while True:
        page = list(
            File.objects.expired(now)
            .exclude(Exists(in_use))
            .exclude(pk__in=skipped)
            .order_by("expires_at", "id")[:PAGE]
        )
        if not page:
            break
        for file in page:
            try:
                file_service.delete_file(file)
            except Conflict:
                # A batch was created on it between the query and the delete: it
                # stays until that batch ends.
                skipped.add(file.pk)
                continue
            deleted += 1
    if deleted:
        log.info("deleted %d expired files", deleted)
    return deleted
