"""safe_json's rules, one by one: what JSON the system refuses to carry, and how it says so."""

from __future__ import annotations

import pytest

from jobs.services import safe_json
from jobs.services.safe_json import MAX_DEPTH, JsonRefused


@pytest.mark.parametrize(
    "text, kind, words",
    [
        ('{"a": NaN}', "number", "has NaN"),
        ("[Infinity]", "number", "has Infinity"),
        ("-Infinity", "number", "has -Infinity"),
        ('{"t": -1e400}', "number", "-1e400, too large"),
        ("1" * 4301, "number", "too many digits"),
        ("[" * 100_000 + "]" * 100_000, "depth", f"more than {MAX_DEPTH} levels"),
        ('{"a": [1, 2}', "syntax", "is not valid JSON: Expecting ',' delimiter at column 12"),
        ('{\n"a" 1}', "syntax", "at line 2 column 5"),
    ],
)
def test_loads_refuses_what_json_or_the_system_cannot_carry(text, kind, words):
    with pytest.raises(JsonRefused) as refused:
        safe_json.loads(text)
    assert refused.value.kind == kind and words in refused.value.message


def test_depth_is_counted_in_containers_and_the_limit_itself_passes():
    assert safe_json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert safe_json.loads('{"a": "[[[[' + "[" * 100 + '"}') == {"a": "[[[[" + "[" * 100}  # brackets in a string
    with pytest.raises(JsonRefused) as refused:
        safe_json.loads('{"a": {"b": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}}")
    assert refused.value.kind == "depth" and refused.value.path.startswith("a.b[0][0]")


def test_lone_surrogates_are_found_in_keys_and_values_with_their_path():
    with pytest.raises(JsonRefused) as refused:
        safe_json.check_unicode(safe_json.loads('{"a": [0, {"b c": "x\\udfff"}]}'))
    assert refused.value.path == "a[1]['b c']" and "\\udfff" in refused.value.message
    with pytest.raises(JsonRefused) as refused:
        safe_json.check_unicode({"k\ud800": 1})
    assert refused.value.path == "['k\\ud800']"
    safe_json.check_unicode(safe_json.loads('["\\ud83d\\ude00", "\\\\ud800"]'))  # a pair; an escaped backslash


def test_shown_is_short_and_escapes_what_cannot_be_stored():
    assert safe_json.shown("a\x00\ud800") == "'a\\x00\\ud800'"
    assert len(safe_json.shown("x" * 10**6)) == 80
    assert safe_json.shown(list(range(10**5))) == "a JSON array of 100000 items"
