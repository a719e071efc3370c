"""Reading batch input files line by line, by byte offset, never whole.

Validation and the worker read lines the same way (BOM, CRLF and blank lines
included), so the byte ranges validation records are the ones a worker sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class RawLine:
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
    yielded with ``data=None``, so one huge line cannot exhaust memory.
    """
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
