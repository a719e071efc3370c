"""Model load failures: back off from a model that will not load here, fail its batch only when that is certain.

A load can fail for reasons of this host (out of memory on a smaller GPU, a
source on storage this host cannot reach, a transient error) or of the model
(a missing or corrupt source, a bad engine option). So a failure first only
makes this worker stop claiming that model for a while (doubling each time),
letting other workers try it; the batch fails only when the failure is
deterministic: the same error BATCHSITE_MODEL_LOAD_ATTEMPTS times in a row
(counted over all workers), or on every live worker when there are two or more.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet, Sum

from jobs.models import ModelLoadFailure, Worker
from jobs.models.clock import Now, later

log = logging.getLogger("batchsite.worker")

# However many failures in a row, a worker tries a model again within the hour.
MAX_BACKOFF_SECONDS = 3600.0


def backing_off(worker_id: str) -> QuerySet[ModelLoadFailure, Any]:
    """The models this worker does not claim now (a subquery for the claim)."""
    return ModelLoadFailure.objects.filter(worker_id=worker_id, retry_at__gt=Now()).values("model")


def backoff_seconds(failures: int) -> float:
    base = settings.BATCHSITE_WORKER.model_load_backoff_seconds
    return min(base * 2 ** max(failures - 1, 0), max(base, MAX_BACKOFF_SECONDS))


def record_failure(worker_id: str, model: str, message: str) -> bool:
    """Count a failed load of ``model`` on this worker; True if the failure is deterministic."""
    with transaction.atomic():
        row = ModelLoadFailure.objects.select_for_update().filter(worker_id=worker_id, model=model).first()
        failures = row.failures + 1 if row is not None and row.message == message else 1
        ModelLoadFailure.objects.update_or_create(
            worker_id=worker_id,
            model=model,
            defaults={
                "failures": failures,
                "message": message,
                "failed_at": Now(),
                "retry_at": later(backoff_seconds(failures)),
            },
        )
    deterministic = is_deterministic(model, message)
    log.warning(
        "model %s failed to load on %s (%d in a row with this error)%s",
        model,
        worker_id,
        failures,
        "; it fails the same way everywhere, so its batches fail" if deterministic else "; backing off from it",
    )
    return deterministic


def is_deterministic(model: str, message: str) -> bool:
    conf = settings.BATCHSITE_WORKER
    same = ModelLoadFailure.objects.filter(model=model, message=message)
    if (same.aggregate(n=Sum("failures"))["n"] or 0) >= conf.model_load_attempts:
        return True
    live = set(Worker.objects.live(conf.stale_after_seconds).values_list("pk", flat=True))
    failed_on = set(same.values_list("worker_id", flat=True))
    return len(live) >= 2 and live <= failed_on


def record_success(worker_id: str, model: str) -> None:
    ModelLoadFailure.objects.filter(worker_id=worker_id, model=model).delete()


def forget(model: str) -> None:
    """After its batch failed: a batch submitted later (perhaps after a fix) gets its own tries."""
    ModelLoadFailure.objects.filter(model=model).delete()
