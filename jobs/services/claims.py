"""How a claim of a chunk ends, and what it keeps: the one home of that sequence.

A worker's claim of a chunk writes its finished lines to a ``PartWriter``
(jobs/services/parts.py). While it runs, ``checkpoint`` records the lines
finished since the last one as a segment, so a claim lost to kill -9 keeps
them. ``end_claim`` ends it: check the chunk is still ours (its fence), store
the last segment, end the chunk (every line ran, or the batch was cancelled
or expired) or hand it back with the rest to run, refresh the batch's counts,
and finalize the batch if that was its last chunk. The queue primitives it
calls (``queue.end_chunk``, ``queue.release_chunk``) stay one guarded UPDATE
each. A next claim of the chunk keeps every recorded part (``kept``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from jobs.models import Chunk, ChunkStatus
from jobs.services import parts, queue, results, share
from jobs.services.parts import Part, PartWriter

log = logging.getLogger("batchsite.worker")

DONE, CUT_SHORT, HANDED_BACK = "done", "cut short", "handed back"


def kept(chunk: Chunk) -> set[int]:
    """The positions of the chunk's lines that recorded parts hold: a new claim runs only
    the others. Logged when earlier claims of it finished some (a resume)."""
    before = parts.recorded(chunk)
    done = parts.done_seqs(before)
    # Fence 0 is not a claim's: lines settled when the batch was created.
    if any(0 < part.fence < chunk.fence for part in before):
        log.info("chunk %s resumed: kept %d lines, running %d", chunk, len(done), chunk.request_count - len(done))
    return done


def _claimed(chunk: Chunk, worker_id: str) -> Any:
    return Chunk.objects.filter(pk=chunk.pk, status=ChunkStatus.RUNNING, worker_id=worker_id, fence=chunk.fence)


def checkpoint(chunk: Chunk, worker_id: str, writer: PartWriter, completed: int, failed: int) -> bool:
    """Store and record the lines the claim finished since its last checkpoint, as a segment
    (``completed``/``failed``: the chunk's live counts). False if the chunk is no longer
    ours: the segment is dropped and the caller stops the claim."""
    part = writer.commit()
    if part is None:
        return True
    recorded = [*parts.recorded(chunk), part]
    listed = [p.to_json() for p in recorded]
    changed = _claimed(chunk, worker_id).update(
        parts=listed, completed=completed, failed=failed, usage=parts.total_usage(recorded)
    )
    if not changed:
        parts.discard(chunk.batch_id, chunk.index, part)
        return False
    chunk.parts = listed  # what end_chunk/release_chunk add the last segment to
    return True


def end_claim(
    chunk: Chunk,
    worker_id: str,
    writer: PartWriter,
    *,
    base: tuple[int, int],
    all_done: bool,
    stopped: bool,
    count_attempt: bool = False,
    reason: str = "",
    finalize: Callable[[str, str], Any] = results.finalize,
) -> str | None:
    """End a claim: DONE, CUT_SHORT (cancelled or expired: keep what ran) or HANDED_BACK
    (the rest to run by another claim); None if the chunk was taken from this worker (its
    unrecorded lines are dropped). ``base``: the (completed, failed) of the parts recorded
    before this claim. ``finalize(batch_id, worker_id)`` runs when the chunk ended (the
    worker may hand it to another thread)."""
    if not queue.report_progress(chunk, worker_id, base[0] + writer.completed, base[1] + writer.failed):
        log.warning("chunk %s was taken from this worker; dropping its results", chunk)
        writer.discard()
        return None
    part: Part | None = None
    try:
        part = writer.commit()
    finally:
        writer.discard()  # an error storing it leaves no half part (no-op after a commit)
    ended = stopped or all_done
    if ended:
        ok = queue.end_chunk(chunk, worker_id, part, cut_short=stopped and not all_done)
    else:
        ok = queue.release_chunk(chunk, worker_id, keep=part, count_attempt=count_attempt, reason=reason)
    if not ok:
        log.warning("chunk %s was taken from this worker before its part was recorded", chunk)
        if part is not None:
            parts.discard(chunk.batch_id, chunk.index, part)
        return None
    share.record_claim(chunk)  # the claim's worker time, for fair share between users
    queue.refresh_batch_counts(chunk.batch_id)
    if ended:
        finalize(chunk.batch_id, worker_id)
    return DONE if all_done else CUT_SHORT if stopped else HANDED_BACK
