"""The nesting bound on JSON dmnc did not write: too deep is a ValueError (never RecursionError), the rest unchanged."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.docker.untrusted_json import MAX_JSON_DEPTH, JsonTooDeep, loads_untrusted, raw_decode_untrusted

# Far past the interpreter's recursion limit: what an impostor daemon sent to take dmnc down.
HOSTILE_DEPTH = 100_000

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


def nested(depth: int, opening: str = "[", closing: str = "]") -> str:
    return opening * depth + closing * depth


def depth_of(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(child) for child in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(child) for child in value), default=0)
    return 0


@pytest.mark.parametrize("text", [nested(HOSTILE_DEPTH), '{"a":' * HOSTILE_DEPTH + "1" + "}" * HOSTILE_DEPTH])
def test_hostile_nesting_is_a_value_error_not_a_recursion_error(text: str) -> None:
    with pytest.raises(JsonTooDeep):
        loads_untrusted(text)
    with pytest.raises(JsonTooDeep):
        raw_decode_untrusted(text, 0)


def test_nesting_just_past_the_bound_is_refused_and_at_the_bound_accepted() -> None:
    assert loads_untrusted(nested(MAX_JSON_DEPTH)) == json.loads(nested(MAX_JSON_DEPTH))
    with pytest.raises(JsonTooDeep, match=f"deeper than {MAX_JSON_DEPTH} levels"):
        loads_untrusted(nested(MAX_JSON_DEPTH + 1).encode())


@given(json_values)
def test_values_within_the_bound_decode_as_json_loads_does(value: object) -> None:
    text = json.dumps(value)
    assert depth_of(value) <= MAX_JSON_DEPTH
    assert loads_untrusted(text) == json.loads(text)
    assert raw_decode_untrusted(" " + text + " []", 1) == (json.loads(text), 1 + len(text))


@given(st.integers(min_value=1, max_value=3 * MAX_JSON_DEPTH), st.sampled_from(["[]", "{}"]))
def test_the_bound_holds_for_any_depth(depth: int, brackets: str) -> None:
    text = nested(depth) if brackets == "[]" else '{"k":' * depth + "0" + "}" * depth
    if depth <= MAX_JSON_DEPTH:
        assert depth_of(loads_untrusted(text)) == depth
    else:
        with pytest.raises(ValueError, match="nested deeper"):
            loads_untrusted(text)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_value_error(data: bytes) -> None:
    # Anything else (RecursionError, TypeError) propagates and fails the test.
    with contextlib.suppress(ValueError):
        loads_untrusted(data)
