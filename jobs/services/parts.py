"""Result parts: the files a claim of a chunk writes, and the record of them on the chunk.

A worker writes the lines its claim of a chunk finished to a pair of files
in the file store (output and errors; each stored whole or not at all: a temp
file renamed into place on disk, a completed multipart upload on S3, see
jobs/storage.py), so the worker that finalizes the batch, on whichever host,
reads them. They are named with the claim's fencing
token (``Chunk.fence``), and only then records the part on the chunk row, in
the UPDATE guarded by that token. So a worker that lost the chunk (it looked
dead and another took over) writes under another name than the winner and
cannot record its part; finalize reads only recorded parts, and checks each
against the counts recorded with it before it publishes anything.

A chunk can have more than one part: a worker stopped by SIGTERM keeps the
lines it finished as a part and hands the chunk back; the next claim runs only
the lines no recorded part holds (``done`` below), so no line runs twice.

A claim also records its finished lines while it runs, as numbered segments
(checkpoints, every BATCHSITE_CHECKPOINT_SECONDS or BATCHSITE_CHECKPOINT_LINES):
each segment is a part of its own (its own pair of files, on S3 its own
objects), recorded by the same fenced UPDATE. So a claim lost to kill -9 or
the OOM killer loses only the lines since its last segment; the next claim,
finalize and the partial results all read segments as they read any part.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from django.core.files.storage import FileSystemStorage, default_storage

from jobs import storage

log = logging.getLogger("batchsite.worker")

# Where parts live in the file store, beside the files users see (which are named file-...).
PREFIX = "parts"


@dataclass(frozen=True)
class Part:
    fence: int  # the claim that wrote it
    completed: int  # lines in its output file
    failed: int  # lines in its error file
    # The chunk's lines it holds, as half-open ranges of their position in the
    # chunk (0 = the chunk's first request line): [[0, 40], [41, 57]].
    done: tuple[tuple[int, int], ...] = ()
    usage: dict[str, int] = field(default_factory=dict)
    segment: int = 0  # the claim's checkpoints are numbered 0, 1, 2, ...

    @property
    def lines(self) -> int:
        return self.completed + self.failed

    def seqs(self) -> set[int]:
        return {seq for start, end in self.done for seq in range(start, end)}

    def to_json(self) -> dict[str, Any]:
        return {
            "fence": self.fence,
            "completed": self.completed,
            "failed": self.failed,
            "done": [list(r) for r in self.done],
            "usage": self.usage,
            "segment": self.segment,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Part:
        return cls(
            fence=int(data["fence"]),
            completed=int(data["completed"]),
            failed=int(data["failed"]),
            done=tuple((int(a), int(b)) for a, b in data.get("done", [])),
            usage=dict(data.get("usage") or {}),
            segment=int(data.get("segment") or 0),
        )


def recorded(chunk: Any) -> list[Part]:
    return [Part.from_json(item) for item in chunk.parts or []]


def done_seqs(parts: Iterable[Part]) -> set[int]:
    seqs: set[int] = set()
    for part in parts:
        seqs |= part.seqs()
    return seqs


def as_ranges(seqs: Iterable[int]) -> tuple[tuple[int, int], ...]:
    ranges: list[list[int]] = []
    for seq in sorted(seqs):
        if ranges and ranges[-1][1] == seq:
            ranges[-1][1] = seq + 1
        else:
            ranges.append([seq, seq + 1])
    return tuple((a, b) for a, b in ranges)


def totals(parts: Iterable[Part]) -> tuple[int, int]:
    """(completed, failed) over ``parts``: a chunk's counts before its next claim runs."""
    parts = list(parts)
    return sum(p.completed for p in parts), sum(p.failed for p in parts)


def total_usage(parts: Iterable[Part]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in parts:
        for key, value in part.usage.items():
            total[key] = total.get(key, 0) + value
    return total


def names(batch_id: str, index: int, fence: int, segment: int = 0) -> tuple[str, str]:
    """The part's output and error files, as names in the file store
    (``parts/BATCH/INDEX-FENCE``, and ``-SEGMENT`` after a claim's first segment)."""
    stem = f"{PREFIX}/{batch_id}/{index:06d}-{fence:06d}"
    if segment:
        stem += f"-{segment:06d}"
    return f"{stem}.out.jsonl", f"{stem}.err.jsonl"


def names_of(batch_id: str, index: int, part: Part) -> tuple[str, str]:
    return names(batch_id, index, part.fence, part.segment)


def open_part(name: str) -> Any:
    """A part file, streamed from the store."""
    return default_storage.open(name, "rb")


def delete_batch(batch_id: str) -> None:
    """Every part file of a batch (once its output is published, or it ended without one)."""
    storage.delete_folder(default_storage, f"{PREFIX}/{batch_id}")


class PartWriter:
    """A claim's part, written to the store line by line as results arrive.

    A chunk's results never pile up in the worker's memory (5,000 embeddings
    are ~22 MiB of JSON): each line goes to the part's output or error stream
    as it comes, buffered. On a local store that stream is the part's own temp
    file, fsynced and renamed into place at ``commit``. On object storage the
    lines are spooled to a local temp file and uploaded at ``commit``: an open
    multipart upload holds a whole upload part (8 MiB, S3's minimum is 5) per
    stream in memory, more than the results themselves, for as long as the
    chunk runs. Lines are in the order they finished, not the input's: like
    OpenAI's, our output is matched to the input by ``custom_id``. Nothing is
    visible under the part's names until ``commit``; ``discard`` leaves
    nothing behind.

    ``commit`` stores the lines written since the last commit as the next
    segment and starts another: a checkpoint is a commit the caller records
    while the claim runs on. The writer's counts are the whole claim's (every
    segment), which is what the claim reports as its progress.
    """

    def __init__(self, batch_id: str, index: int, fence: int) -> None:
        self.batch_id, self.index, self.fence = batch_id, index, fence
        self.completed = 0  # the claim's, over all its segments
        self.failed = 0
        self.seqs: list[int] = []  # the chunk positions the claim finished
        self.segment = 0  # the next segment's number
        self.committed_at = time.monotonic()
        self._stack: contextlib.ExitStack | None = None
        self._out: IO[bytes] | None = None
        self._err: IO[bytes] | None = None
        self._reset_segment()

    def _reset_segment(self) -> None:
        self._seg_completed = self._seg_failed = 0
        self._seg_seqs: list[int] = []
        self._seg_usage: dict[str, int] = {}

    def _open(self) -> None:
        stack = contextlib.ExitStack()
        in_place = isinstance(default_storage, FileSystemStorage)
        try:
            streams = []
            for name in names(self.batch_id, self.index, self.fence, self.segment):
                if in_place:
                    streams.append(stack.enter_context(storage.writer(default_storage, name)))
                else:
                    streams.append(stack.enter_context(_spooled(name)))
            self._out, self._err = streams
        except BaseException:
            stack.close()
            raise
        self._stack = stack

    def add(self, line: bytes, ok: bool, seq: int, usage: dict[str, int] | None = None) -> None:
        if self._stack is None:
            self._open()
        if ok:
            self._out.write(line)  # type: ignore[union-attr]
            self.completed += 1
            self._seg_completed += 1
        else:
            self._err.write(line)  # type: ignore[union-attr]
            self.failed += 1
            self._seg_failed += 1
        self.seqs.append(seq)
        self._seg_seqs.append(seq)
        for key in USAGE_KEYS:
            self._seg_usage[key] = self._seg_usage.get(key, 0) + int((usage or {}).get(key) or 0)

    @property
    def empty(self) -> bool:
        """No line written since the last commit."""
        return not self._seg_seqs

    @property
    def uncommitted(self) -> int:
        return len(self._seg_seqs)

    def commit(self, even_empty: bool = False) -> Part | None:
        """Store the lines written since the last commit as a segment (both files, each whole
        or not at all) and start the next; None if there are none (unless ``even_empty``).
        The caller records the part on the chunk, or discards it if it lost the chunk meanwhile."""
        self.committed_at = time.monotonic()
        if self.empty and not even_empty:
            self.discard()
            return None
        if self._stack is None:
            self._open()
        stack, self._stack = self._stack, None
        assert stack is not None
        stack.close()
        part = Part(
            self.fence,
            self._seg_completed,
            self._seg_failed,
            as_ranges(self._seg_seqs),
            dict(self._seg_usage),
            self.segment,
        )
        self.segment += 1
        self._reset_segment()
        return part

    def discard(self) -> None:
        """Drop what was written since the last commit: nothing of it is stored."""
        stack, self._stack = self._stack, None
        if stack is None:
            return
        # Closing the writers with an exception is how they abort (temp file
        # removed, multipart upload aborted).
        with contextlib.suppress(_Discarded):
            stack.__exit__(_Discarded, _Discarded(), None)


USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


@contextlib.contextmanager
def _spooled(name: str) -> Iterator[IO[bytes]]:
    """A local temp file, uploaded to the store under ``name`` when the block ends without error."""
    with tempfile.TemporaryFile() as spool:
        yield spool
        spool.seek(0)
        with storage.writer(default_storage, name) as out:
            shutil.copyfileobj(spool, out, storage.READ_BUFFER)


class _Discarded(Exception):
    """Thrown into a part's writers to abort them."""


def write(
    batch_id: str,
    index: int,
    fence: int,
    output: list[bytes],
    errors: list[bytes],
    seqs: Iterable[int],
    usage: dict[str, int],
) -> Part:
    """Write a whole part at once (finalize's tests and tools; the worker streams with PartWriter)."""
    positions = sorted(seqs)
    if len(positions) != len(output) + len(errors):
        raise ValueError(f"{len(output) + len(errors)} lines for {len(positions)} positions")
    writer = PartWriter(batch_id, index, fence)
    lines = [(line, True) for line in output] + [(line, False) for line in errors]
    for (line, ok), seq in zip(lines, positions, strict=True):
        writer.add(line, ok, seq)
    part = writer.commit(even_empty=True)
    assert part is not None
    return Part(part.fence, part.completed, part.failed, part.done, dict(usage), part.segment)


def discard(batch_id: str, index: int, part: Part) -> None:
    for name in names_of(batch_id, index, part):
        default_storage.delete(name)  # no error if it is not there


def count_lines(name: str) -> int | None:
    """Lines in a part file, None if it is missing."""
    try:
        with open_part(name) as fh:
            return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
    except FileNotFoundError:
        return None


def problem(batch_id: str, index: int, part: Part, request_count: int) -> str | None:
    """Why this recorded part cannot be published as it is; None if its files hold what was recorded."""
    if part.lines != sum(end - start for start, end in part.done):
        return f"part {part.fence} records {part.lines} lines but {part.done} positions"
    if any(start < 0 or end > request_count or start >= end for start, end in part.done):
        return f"part {part.fence} records positions outside the chunk's {request_count} lines"
    for name, expected in zip(names_of(batch_id, index, part), (part.completed, part.failed), strict=True):
        found = count_lines(name)
        short = name.rsplit("/", 1)[-1]
        if found is None:
            return f"part file {short} is missing"
        if found != expected:
            return f"part file {short} has {found} lines, {expected} were recorded"
    return None
