"""``invalid_lines: "skip"``: a file's bad lines settled when its batch is created.

Each bad line goes to the error file as a line that never ran (``custom_id``
where it could be read, else null; the validation code; a message naming the
line), and the valid lines run. The settled lines are written as each chunk's
part with fence 0, which no claim ever holds (claims start at fence 1): a claim
keeps that part's lines as done and runs only the others (claims.kept), and
finalize assembles it like any part, so every input line still ends in exactly
one of the two files and request_counts.failed counts the bad ones.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.utils import timezone

from jobs.errors import InvalidRequest
from jobs.models import Batch, Chunk, ChunkStatus
from jobs.services import parts
from jobs.services.results import error_line
from jobs.services.safe_json import shown

MODES = ("fail", "skip")
SETTLED_FENCE = 0  # the lines settled at create; no claim's fence (claims.kept)


def parse_mode(value: Any) -> str:
    """``invalid_lines`` as sent: ``fail`` (OpenAI's behaviour, the default) or ``skip``."""
    if value is None:
        return "fail"
    if not isinstance(value, str) or value not in MODES:
        raise InvalidRequest(
            f"invalid_lines must be one of: {', '.join(MODES)}; got {shown(value)}.",
            param="invalid_lines",
            code="invalid_invalid_lines",
        )
    return value


def settle(batch: Batch, chunks: list[Chunk], bad: list[list[Any]]) -> int:
    """Write the bad lines' error parts (inside the create's transaction, before any worker can
    claim the chunks); a chunk with only bad lines is done at once. Returns the lines settled."""
    starts, by_chunk = [], defaultdict(list)
    first = 0
    for chunk in chunks:
        starts.append((first, chunk))
        first += chunk.request_count
    index = 0
    for position, _line, code, message, custom_id in bad:
        while index + 1 < len(starts) and starts[index + 1][0] <= position:
            index += 1
        start, chunk = starts[index]
        by_chunk[chunk.index].append((position - start, error_line(custom_id, code, message)))
    now = timezone.now()
    for chunk in chunks:
        lines = sorted(by_chunk.get(chunk.index, []))
        if not lines:
            continue
        errors, seqs = [line for _, line in lines], [seq for seq, _ in lines]
        part = parts.write(batch.id, chunk.index, SETTLED_FENCE, [], errors, seqs, {})
        fields: dict[str, Any] = {"parts": [part.to_json()], "failed": part.failed}
        if part.failed == chunk.request_count:
            fields.update(status=ChunkStatus.DONE, finished_at=now)
        # By (batch, index): a bulk-created chunk has no pk on every database.
        Chunk.objects.filter(batch=batch, index=chunk.index).update(**fields)
    return len(bad)
