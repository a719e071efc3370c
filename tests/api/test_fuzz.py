"""Fuzz what users send, with hypothesis (issue 9): batch input lines and metadata made of
arbitrary Unicode (lone surrogates, NUL, U+2028 included), NaN and infinite numbers, odd
types and deep nesting.

Whatever comes: no 5xx; a refusal stores nothing; an accepted batch holds only what the
system can carry (checked by an oracle that shares no code with the validator); the user's
list and the batch still render. Here through the Django test client; test_hostile_live.py
sends a few examples to the real web server.

The examples are the same on every run (derandomized), so CI does not flake on a new find;
``BATCHSITE_FUZZ_EXAMPLES=5000`` runs that many fresh random ones instead.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jobs.models import Batch
from tests.conftest import CHAT_MODEL, chat_line, jsonl

pytestmark = pytest.mark.django_db

_EXAMPLES = os.environ.get("BATCHSITE_FUZZ_EXAMPLES")


def fuzz_settings(examples: int) -> Any:
    return settings(
        max_examples=int(_EXAMPLES) if _EXAMPLES else examples,
        derandomize=_EXAMPLES is None,
        database=None,
        deadline=None,
        # The Django client and the database are shared by a test's examples on purpose:
        # what earlier examples stored must keep rendering too.
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- strategies ------------------------------------------------------------------------------

# st.text() draws a surrogate about once in a thousand characters; these draw one often.
CHAR = st.one_of(
    st.characters(exclude_categories=()),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
    st.sampled_from(["\x00", "\u2028", '"', "\\", "\ufeff", "\U0001f600"]),
)
TEXT = st.lists(CHAR, max_size=12).map("".join)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), TEXT)
JSON = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=16
)

# Where a hostile value goes in an otherwise valid line.
PLACES = ["custom_id", "method", "url", "body", "model", "messages", "content", "temperature", "extra"]


def mutated(i: int, changes: dict[str, Any]) -> dict[str, Any]:
    line = chat_line(i)
    body = line["body"]
    for place, value in changes.items():
        if place in ("custom_id", "method", "url", "body"):
            line[place] = value
        elif place == "extra":
            line[str(value)] = value
        elif isinstance(body, dict) and place in ("model", "messages", "temperature"):
            body[place] = value
        elif isinstance(body, dict) and place == "content":
            messages = body.get("messages")
            if isinstance(messages, list) and messages and isinstance(messages[0], dict):
                messages[0]["content"] = value
    return line


def encoded(line: Any, ascii_only: bool) -> bytes:
    """A line as a client might write it: json.dumps escapes a lone surrogate (\\ud800) and
    writes NaN; without ensure_ascii, surrogatepass writes its raw (invalid UTF-8) bytes."""
    text = json.dumps(line, allow_nan=True, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


def nested(depth: int) -> bytes:
    return json.dumps(chat_line(0)).encode()[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}"


LINE = st.one_of(
    st.builds(
        encoded,
        st.builds(mutated, st.integers(1, 10**6), st.dictionaries(st.sampled_from(PLACES), JSON)),
        st.booleans(),
    ),
    st.binary(max_size=120),
    st.integers(60, 100_000).map(nested),
    st.sampled_from([b"NaN", b'{"custom_id": 1e999}', b"\xef\xbb\xbf", b"\xed\xa0\x80"]),
    st.integers(4000, 5000).map(lambda digits: b'{"custom_id": ' + b"9" * digits + b"}"),
)
METADATA = st.one_of(
    st.dictionaries(TEXT, TEXT, max_size=18),
    st.dictionaries(st.text(max_size=70), st.text(max_size=600), max_size=3),
    JSON,
)


# --- the oracle: what the system can carry, decided without its own code --------------------


def carriable(raw: bytes) -> bool:
    """Strict JSON whose every string is encodable as UTF-8, at most 64 levels deep."""

    def refuse(name: str) -> Any:
        raise ValueError(name)

    def depth(value: Any) -> int:
        if isinstance(value, dict):
            return 1 + max(map(depth, value.values()), default=0)
        if isinstance(value, list):
            return 1 + max(map(depth, value), default=0)
        return 0

    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=refuse)
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
        return depth(value) <= 64
    except (ValueError, UnicodeError, RecursionError):
        return False


# --- the properties --------------------------------------------------------------------------


def assert_renders(api: Any, batch_id: str) -> None:
    listed = api.get("/v1/batches?limit=100")
    assert listed.status_code == 200, listed.content[:500]
    assert batch_id in [b["id"] for b in listed.json()["data"]]
    assert api.get(f"/v1/batches/{batch_id}").status_code == 200


@fuzz_settings(150)
@given(lines=st.lists(LINE, min_size=1, max_size=3), shortcut=st.booleans())
def test_fuzzed_lines_give_a_batch_or_a_4xx_never_a_5xx(raw_client, models, limits, lines, shortcut):
    limits(
        max_queued_batches=10**6,
        max_queued_requests=10**9,
        user_max_queued_batches=10**6,
        user_max_queued_requests=10**9,
    )
    content = jsonl([chat_line(0), *lines])
    before = Batch.objects.count()
    f = io.BytesIO(content)
    f.name = "fuzz.jsonl"
    if shortcut:
        response = raw_client.post("/v1/batches", {"file": f, "model": CHAT_MODEL})
    else:
        file_id = raw_client.post("/v1/files", {"file": f, "purpose": "batch"}).json()["id"]
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        response = raw_client.post("/v1/batches", body, content_type="application/json")
    assert response.status_code < 500, response.content[:500]
    event(f"answer: {response.status_code} {response.json().get('status', '')}")  # pytest --hypothesis-show-statistics
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert Batch.objects.count() == before
        return
    batch = response.json()
    assert batch["status"] in ("in_progress", "failed")
    physical = [line.removesuffix(b"\r") for line in content.split(b"\n")]
    if batch["status"] == "in_progress":
        assert all(carriable(line) for line in physical if line.strip()), content[:500]
    else:
        for error in batch["errors"]["data"]:
            event(f"line error: {error['code']}")
            assert error["line"] is None or 1 <= error["line"] <= len(physical)
            assert "\x00" not in error["message"] and len(error["message"]) < 1000
    assert_renders(raw_client, batch["id"])


@pytest.fixture
def input_file_id(upload: Any) -> str:
    return str(upload(jsonl([chat_line(1)]))["id"])


@fuzz_settings(200)
@given(metadata=METADATA)
def test_fuzzed_metadata_is_stored_as_sent_or_refused_with_a_400(raw_client, models, limits, input_file_id, metadata):
    limits(
        max_queued_batches=10**6,
        max_queued_requests=10**9,
        user_max_queued_batches=10**6,
        user_max_queued_requests=10**9,
    )
    before = Batch.objects.count()
    body = json.dumps({"input_file_id": input_file_id, "endpoint": "/v1/chat/completions", "metadata": metadata})
    response = raw_client.post("/v1/batches", body, content_type="application/json")
    assert response.status_code in (200, 400), response.content[:500]
    event(f"answer: {response.status_code}")
    if response.status_code == 400:
        assert response.json()["error"]["code"] in ("invalid_metadata", "invalid_request_body")
        assert Batch.objects.count() == before
        return
    assert isinstance(metadata, dict | None) and carriable(json.dumps(metadata).encode())
    assert all("\x00" not in text for pair in (metadata or {}).items() for text in pair)
    batch = response.json()
    assert batch["metadata"] == metadata
    assert_renders(raw_client, batch["id"])
