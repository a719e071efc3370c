"""orjson on bytes in place of json on text, without changing a verdict, a value or a message.

safe_json.loads_fast must answer exactly what the stdlib and safe_json's rules answer, or
UNDECIDED (then the stdlib decides); jsonl.iter_file_lines must give exactly the lines,
offsets and data of jsonl.iter_lines. Both are checked on hostile and on generated input.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.services import jsonl, safe_json
from jobs.services.jsonl import iter_file_lines, iter_lines
from jobs.services.safe_json import MAX_DEPTH, UNDECIDED, JsonRefused


def stdlib_verdict(data: bytes) -> tuple[str, Any]:
    """What validation did before orjson: decode, safe_json.loads, check_unicode."""
    try:
        text = data.decode("utf-8")
        value = safe_json.loads(text)
        safe_json.check_unicode(value, text)
    except (UnicodeDecodeError, JsonRefused) as exc:
        return "refused", type(exc).__name__
    return "accepted", value


def same(a: Any, b: Any) -> bool:
    """Equal with types (1 == 1.0 == True in Python; not here)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) and repr(a) == repr(b)


HOSTILE = [
    b'{"a": NaN}',
    b"[Infinity]",
    b"[-1e400]",
    b"1" * 4301,
    b"[" * 100_000 + b"]" * 100_000,
    b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
    b'{"a": "' + b"[" * 200 + b'"}',
    b'["\\ud800"]',
    b'["\\udc00\\ud800"]',
    b'["\\ud83d\\ude00"]',
    b'{"\\udfff": 1}',
    b'"\xed\xa0\x80"',
    b"\xff\xfe",
    b'{"seed": 123456789012345678901234567890}',
    b'{"seed": -9223372036854775809}',
    b"18446744073709551615",
    b'{"seed": 12345678901234567890123456789012345678901234567890e-30}',
    b'{"a": 1, "a": 2}',
    b'{"custom_id": "x", "method": "POST",',
    b'"\\u0000"',
    b"\xef\xbb\xbf[1]",
    b"[1] x",
    b"-0",
    b"1E400",
    b"[1e-400]",
    b'"a\x01b"',
    b" \t[1]\r\n",
    b"\x0c[1]",
]


@pytest.mark.parametrize("data", HOSTILE, ids=range(len(HOSTILE)))
def test_fast_parse_gives_the_stdlib_verdict_or_none(data):
    verdict, value = stdlib_verdict(data)
    fast = safe_json.loads_fast(data)
    assert fast is UNDECIDED if verdict == "refused" else (fast is UNDECIDED or same(fast, value))
    if verdict == "refused":  # inexact reads (validation's quick pass) never accept what the rules refuse
        assert safe_json.loads_fast(data, exact=False) is UNDECIDED


def test_integers_beyond_64_bits_stay_exact_in_the_worker_and_validation():
    line = b'{"custom_id": "a", "body": {"seed": 123456789012345678901234567890}}'
    assert jsonl.loads(line)["body"]["seed"] == 123456789012345678901234567890
    assert safe_json.loads_fast(line) is UNDECIDED  # left to the stdlib, which reads it exactly
    assert jsonl.loads(b'{"n": 18446744073709551615}')["n"] == 18446744073709551615


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_generated_json_reads_the_same(value, ascii_only):
    data = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    verdict, expected = stdlib_verdict(data)
    fast = safe_json.loads_fast(data)
    if verdict == "refused":
        assert fast is UNDECIDED
    else:
        assert fast is UNDECIDED or same(fast, expected)
        assert same(jsonl.loads(data), expected)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40) | st.text(alphabet='[]{}",:0123456789.eE-+ \\uadtrnl\n', max_size=40).map(str.encode))
def test_arbitrary_bytes_read_the_same(data):
    verdict, expected = stdlib_verdict(data)
    fast = safe_json.loads_fast(data)
    assert fast is UNDECIDED or (verdict == "accepted" and same(fast, expected))
    if verdict == "refused":
        assert safe_json.loads_fast(data, exact=False) is UNDECIDED


LINE_PIECES = [b"a", b"\n", b"\r", b"\r\n", b"\xef\xbb\xbf", b" ", b"bcd", b"{}"]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(LINE_PIECES), max_size=30).map(b"".join),
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=1, max_value=9),
)
def test_block_reader_gives_the_lines_of_iter_lines(data, max_line_bytes, block):
    expected = [tuple(line) for line in iter_lines(io.BytesIO(data), max_line_bytes)]
    assert list(iter_file_lines(io.BytesIO(data), max_line_bytes, block)) == expected


def test_block_reader_keeps_no_too_long_line_in_memory():
    import tracemalloc

    huge = io.BytesIO(b"x" * (10 << 20) + b"\n{}\n")
    tracemalloc.start()
    lines = list(iter_file_lines(huge, 1000, block=1 << 16))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert lines == [(1, 0, (10 << 20) + 1, None), (2, (10 << 20) + 1, (10 << 20) + 4, b"{}")]
    assert peak < 1 << 20  # a few blocks, not the 10 MB line
