"""Monotonic counters in the database, shared by every process (web, workers, housekeeper).

/metrics is served by whichever web process answers, so a counter cannot live
in one process's memory; and a sum over chunk rows falls when a chunk is sent
back and run again. These rows are only ever added to.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.db.models import F

from jobs.models import Chunk, ChunkStatus, Counter

LINES_RERUN = "batchsite_lines_rerun_total"
ENDED_CHUNKS = (ChunkStatus.DONE, ChunkStatus.CANCELLED, ChunkStatus.FAILED)


def key(name: str, *labels: str) -> str:
    return "|".join((name, *labels))


def add(name: str, n: int, *labels: str) -> None:
    """Add ``n`` (nothing if it is not positive) to the counter ``name`` with ``labels``."""
    if n <= 0:
        return
    pk = key(name, *labels)
    if Counter.objects.filter(pk=pk).update(value=F("value") + n):
        return
    try:
        with transaction.atomic():
            Counter.objects.create(name=pk, value=n)
    except IntegrityError:  # created by another process meanwhile
        Counter.objects.filter(pk=pk).update(value=F("value") + n)


def value(name: str, *labels: str) -> int:
    return Counter.objects.filter(pk=key(name, *labels)).values_list("value", flat=True).first() or 0


def labelled(name: str) -> Iterable[tuple[list[str], int]]:
    """Every counter of this name: (its labels, its value)."""
    for pk, total in Counter.objects.filter(name__startswith=name + "|").values_list("name", "value").order_by("name"):
        yield pk.split("|")[1:], total
    plain = Counter.objects.filter(pk=name).values_list("value", flat=True).first()
    if plain is not None:
        yield [], plain


def ended_figures(chunk: Chunk) -> dict[str, int]:
    """What batchsite_requests and batchsite_tokens count for this ended chunk (the same sums
    as jobs.services.metrics.requests): kept in ``Chunk.counted`` when finalize changes it."""
    failed = chunk.request_count - chunk.completed if chunk.status == ChunkStatus.FAILED else chunk.failed
    not_run = chunk.request_count - chunk.completed - chunk.failed if chunk.status == ChunkStatus.CANCELLED else 0
    usage = chunk.usage or {}
    return {
        "completed": chunk.completed,
        "failed": failed,
        "not_run": not_run,
        "input": int(usage.get("prompt_tokens") or 0),
        "output": int(usage.get("completion_tokens") or 0),
    }
