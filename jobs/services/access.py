"""Who may see and act on which batch, for the pages.

A user sees their own batches in full; staff see and manage everyone's. Other
users' batches are not found at all (a 404, as the API answers), so an id
reveals nothing. The API keeps its stricter owner-only rule
(``batches.get_batch``), as OpenAI's does.
"""

from __future__ import annotations

from typing import Any

from jobs.errors import InvalidRequest, not_found
from jobs.models import Batch, File
from jobs.models.batches import BatchQuerySet
from jobs.models.ids import could_be_id
from jobs.services import batches as batch_service

BATCH_FILES = ("input", "output", "error")


def sees_in_full(user: Any, batch: Batch) -> bool:
    return bool(user.is_staff) or batch.owner_id == user.pk


def visible_batches(user: Any, everyone: bool = False) -> BatchQuerySet:
    """The batches a list shows: the user's own, or with ``everyone`` (staff only) all of them."""
    if everyone and user.is_staff:
        return Batch.objects.all()
    return Batch.objects.owned_by(user)


def get_visible_batch(user: Any, batch_id: str) -> Batch:
    # A hostile id (NUL, which PostgreSQL cannot query, or megabytes of path) names nothing.
    batch = Batch.objects.select_related("owner").filter(pk=batch_id).first() if could_be_id(batch_id) else None
    if batch is None or not sees_in_full(user, batch):
        raise not_found("batch", batch_id, "batch_id")
    return batch


def cancel_visible_batch(user: Any, batch_id: str) -> Batch:
    """The owner, or staff, cancels through the same service as the API."""
    return batch_service.cancel_batch(get_visible_batch(user, batch_id))


def batch_file(user: Any, batch_id: str, kind: str) -> File:
    """A batch's input, output or error file, for someone who sees the batch."""
    if kind not in BATCH_FILES:
        raise InvalidRequest(f"kind must be one of: {', '.join(BATCH_FILES)}.", param="kind", code="invalid_value")
    batch = get_visible_batch(user, batch_id)
    file_id = getattr(batch, f"{kind}_file_id")
    # Users may delete their files (OpenAI allows it) and files expire; the batch keeps the id.
    file = File.objects.live().filter(pk=file_id).first() if file_id else None
    if file is None:
        raise not_found("file", file_id or f"{kind} file of {batch_id}", "file_id")
    return file
