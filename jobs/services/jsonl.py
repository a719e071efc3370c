"""Reading batch input files line by line, by byte offset, never whole.

Validation and the worker read lines the same way (BOM, CRLF and blank lines
included), so the byte ranges validation records are the ones a worker sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple

import orjson

from jobs.services.safe_json import has_long_digits

BOM = b"\xef\xbb\xbf"


def loads(data: bytes) -> Any:
    """A line as Python objects, exactly as ``json.loads`` reads it, at orjson's speed.

    orjson where it reads the same (all but integers beyond 64 bits, see
    safe_json.has_long_digits; what it refuses, such as a lone surrogate escape, the
    stdlib reads or refuses instead); the stdlib otherwise. Raises ValueError
    (json.JSONDecodeError) for text that is not JSON.
    """
    if not has_long_digits(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


class RawLine(NamedTuple):
    # A tuple, not a frozen dataclass: one is made per line of every upload, and
    # building frozen dataclasses showed in validation's profile (py-spy).
    number: int  # 1-based physical line number in the file
    start: int  # byte offset of the line's first byte
    end: int  # byte offset just past its newline
    data: bytes | None  # the line without BOM and line ending; None when too long

    @property
    def blank(self) -> bool:
        return self.data is not None and not self.data.strip()


def iter_lines(
    f: BinaryIO, max_line_bytes: int, start: int = 0, end: int | None = None, first_number: int = 1
) -> Iterator[RawLine]:
    """Yield the lines of ``f`` between byte offsets ``start`` and ``end``.

    A line longer than ``max_line_bytes`` is skipped over in bounded reads and
    yielded with ``data=None``, so one huge line cannot exhaust memory. ``f`` may
    be a pipe when ``start`` is 0 (validation in a child process reads one).
    """
    if start or f.seekable():
        f.seek(start)
    offset = start
    number = first_number - 1
    while end is None or offset < end:
        raw = f.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        line_start = offset
        offset += len(raw)
        data: bytes | None
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = f.readline(1 << 20)
                offset += len(raw)
            data = None
        else:
            data = raw
            if line_start == 0 and data.startswith(BOM):
                data = data[len(BOM) :]
            data = data.rstrip(b"\r\n")
        yield RawLine(number, line_start, offset, data)


def iter_file_lines(
    f: BinaryIO, max_line_bytes: int, block: int = 1 << 20
) -> Iterator[tuple[int, int, int, bytes | None]]:
    """``iter_lines`` over a whole file, from its current position (its start), as plain
    (number, start, end, data) tuples: the same lines, offsets and data, read in blocks.

    The validation pass reads every line of every upload; ``readline`` per line and a
    named tuple per line were a third of its time (py-spy). Worker reads of a chunk's
    byte range keep ``iter_lines``. A line longer than ``max_line_bytes`` is not kept
    while it is read: memory stays bounded by ``block`` and ``max_line_bytes``.
    """
    number = 0
    line_start = 0  # offset of the current line's first byte
    length = 0  # bytes of the current line read so far, without its newline
    kept = b""  # those bytes, while the line is not too long
    too_long = False
    while True:
        data = f.read(block)
        if not data:
            break
        pieces = data.split(b"\n")
        tail = pieces.pop()  # after the block's last newline: the start of a line
        for piece in pieces:
            number += 1
            length += len(piece)
            end = line_start + length + 1
            if too_long or length > max_line_bytes:
                yield number, line_start, end, None
            else:
                raw = kept + piece if kept else piece
                if line_start == 0 and raw.startswith(BOM):
                    raw = raw[len(BOM) :]
                yield number, line_start, end, raw.rstrip(b"\r\n")
            line_start, length, kept, too_long = end, 0, b"", False
        if tail:
            length += len(tail)
            if too_long or length > max_line_bytes:
                too_long, kept = True, b""
            else:
                kept += tail
    if length:  # a last line without a newline
        number += 1
        if too_long or length > max_line_bytes:
            yield number, line_start, line_start + length, None
        else:
            raw = kept[len(BOM) :] if line_start == 0 and kept.startswith(BOM) else kept
            yield number, line_start, line_start + length, raw.rstrip(b"\r\n")
