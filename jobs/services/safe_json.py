"""JSON that is safe to store, hand to an engine and render again.

Python's ``json`` accepts more than JSON, and more than the rest of the system
can carry: ``NaN`` and ``Infinity``; numbers that overflow to ``inf``
(``1e999``) or have more digits than Python converts; strings with lone
UTF-16 surrogates (``"\\ud800"`` decodes to a ``str`` that has no UTF-8 form,
so writing, storing or rendering it fails); and nesting so deep that the
decoder, or any recursive code after it, runs out of stack. Each of these
once gave a 500. They are refused here, each by one small rule, with a
message saying what and where, so a faster parser (orjson) can replace the
``json.loads`` call and keep the rules.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import orjson

# Far below Python's recursion limit (about 1,000 frames, shared with the
# server's own stack) and the 128 levels serde_json-based parsers accept, yet
# far above real requests: a JSON schema nested ten objects deep inside a
# response_format is about 30 levels.
MAX_DEPTH = 64

# JSON escapes that decode to a UTF-16 surrogate. Paired ones become one
# character; only a text that has one of these can hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# orjson reads an integer beyond 64 bits as a float (1e+29, not the exact int the
# stdlib gives); 19 digits in a row is the shortest text that might hold one. Found
# by mapping every digit to "0" (bytes.translate, in C) and looking for 19 zeros:
# a regex took longer than orjson's whole parse.
_SCAN = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


def has_long_digits(data: bytes) -> bool:
    return _LONG_RUN in data.translate(_SCAN)


# What loads_fast answers when it cannot decide a text alone.
UNDECIDED: Any = object()


class JsonRefused(ValueError):
    """Text that is not JSON this system can carry.

    ``kind`` names the rule (``syntax``, ``number``, ``depth``, ``unicode``);
    ``message`` is a predicate to put after a subject ("Line 3 " + message,
    "The request body " + message); ``path`` (``body.messages[0]``) says
    where, when known.
    """

    def __init__(self, kind: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.path = path


def loads(text: str) -> Any:
    """Parse ``text`` as strict JSON, nested at most MAX_DEPTH levels. Raises JsonRefused.

    Lone surrogates are allowed through: callers that store or forward
    strings check them with ``check_unicode`` and name the field themselves.
    """
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        # The C decoder stops at the interpreter's recursion limit; nothing
        # that deep could pass the depth rule anyway.
        raise JsonRefused("depth", f"is nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        raise JsonRefused("syntax", f"is not valid JSON: {exc.msg} at {where}") from None
    except JsonRefused:
        raise
    except ValueError:
        # int() refuses more than sys.get_int_max_str_digits() (4,300) digits.
        raise JsonRefused("number", "has a number with too many digits") from None
    check_depth(value, text)
    return value


def loads_fast(data: bytes, exact: bool = True) -> Any:
    """orjson's reading of UTF-8 ``data`` when it passes every rule here; UNDECIDED otherwise,
    and then ``loads`` (with ``check_unicode``) on the decoded text decides, with its messages.

    Exact, not an approximation: orjson refuses every text that these rules refuse
    except by depth (NaN and Infinity, numbers that overflow to infinity, invalid
    UTF-8, lone surrogates, escaped or not), refuses nothing that it then reads
    differently from the stdlib, and reads the same values, except integers of
    more than 64 bits (as floats): a text with a long run of digits is left to the
    stdlib. Depth is checked here, and a text too deep is left to ``loads`` too, so
    its refusal reads the same whichever parser saw it first.

    ``exact=False`` skips the long-digits scan (a third of the cost): for a caller
    that only looks at the strings and booleans in the value and only to accept it,
    since orjson accepts a text exactly when the rules do either way.
    """
    if exact and has_long_digits(data):
        return UNDECIDED
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return UNDECIDED
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH:  # else it cannot be that deep, as in check_depth
        try:
            check_depth(value, data)
        except JsonRefused:
            return UNDECIDED
    return value


def _refuse_constant(name: str) -> Any:
    raise JsonRefused("number", f"has {name}, which is not a JSON number")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        shown = literal if len(literal) <= 40 else literal[:37] + "..."
        raise JsonRefused("number", f"has the number {shown}, too large to be finite")
    return number


# One decoder for every call: json.loads with hooks builds a new one each time,
# which tripled the cost of validating a file of short lines.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def check_depth(value: Any, text: str | bytes) -> None:
    """Refuse containers nested more than MAX_DEPTH levels (the top level is 1)."""
    opening = (b"[", b"{") if isinstance(text, bytes) else ("[", "{")
    if text.count(opening[0]) + text.count(opening[1]) <= MAX_DEPTH:  # type: ignore[arg-type]
        return  # cannot be that deep: most lines stop here at C speed
    for node, depth, trail in _walk(value):
        if depth > MAX_DEPTH and isinstance(node, dict | list):
            raise JsonRefused("depth", f"is nested more than {MAX_DEPTH} levels deep", path_text(trail))


def check_unicode(value: Any, text: str | None = None) -> None:
    """Refuse a key or string holding a lone surrogate (``"\\ud800"``): it has no UTF-8 form.

    With ``text`` (the JSON that ``value`` was parsed from), values whose
    text has no surrogate escape are passed without walking them.
    """
    if text is not None and not _SURROGATE_ESCAPE.search(text):
        return
    for node, _, trail in _walk(value):
        bad = _SURROGATE.search(node) if isinstance(node, str) else None
        if bad is not None:
            path = path_text(trail)
            where = f" in {path}" if path else ""
            raise JsonRefused(
                "unicode",
                f"has a lone surrogate (\\u{ord(bad.group()):04x}){where}, which is not valid Unicode",
                path,
            )


def has_lone_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


# A trail is a linked list of keys from the top: (parent trail, key) or None.
Trail = tuple[Any, str | int] | None


def _walk(value: Any) -> Iterator[tuple[Any, int, Trail]]:
    """Every container, key and string in ``value`` with its depth, without recursion.

    Depth counts containers (the top one is 1; a string has its container's
    depth plus one). A key is yielded with the trail of the value it names,
    so a bad key and a bad value are reported at the same path.
    """
    stack: list[tuple[Any, int, Trail]] = [(value, 1, None)]
    while stack:
        node, depth, trail = stack.pop()
        yield node, depth, trail
        if isinstance(node, dict):
            for key, child in node.items():
                child_trail = (trail, key)
                yield key, depth, child_trail
                if isinstance(child, dict | list | str):
                    stack.append((child, depth + 1, child_trail))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                if isinstance(child, dict | list | str):
                    stack.append((child, depth + 1, (trail, index)))


def path_text(trail: Trail) -> str | None:
    """``body.messages[0].content`` for a trail; odd keys are shown escaped and cut short."""
    keys: list[str | int] = []
    while trail is not None:
        trail, key = trail
        keys.append(key)
    if not keys:
        return None
    parts: list[str] = []
    for key in reversed(keys):
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif _IDENTIFIER.fullmatch(key):
            parts.append(f".{key}" if parts else key)
        else:
            parts.append(f"[{shown(key, 40)}]")
    text = "".join(parts)
    return text if len(text) <= 120 else text[:117] + "..."


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: safe to put in a message and store.

    repr escapes NUL, control characters and lone surrogates, which neither
    PostgreSQL nor UTF-8 can hold; the cut keeps one hostile line from making
    a megabyte error message.
    """
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'} of {len(value)} items"
    text = repr(value[:limit] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
