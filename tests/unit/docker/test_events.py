"""Event decoding and query building: partial lines, unknown fields, garbage, `since` for reconnects."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.docker.events import EventDecoder, encode_filters, format_since


def event_line(action: str, time_nano: int, **extra: object) -> bytes:
    payload = {
        "Type": "network",
        "Action": action,
        "Actor": {"ID": "n1", "Attributes": {"name": "net"}},
        "scope": "local",
        "time": time_nano // 1_000_000_000,
        "timeNano": time_nano,
        **extra,
    }
    return json.dumps(payload).encode() + b"\n"


def test_events_split_mid_line_are_reassembled() -> None:
    decoder = EventDecoder()
    wire = event_line("create", 1_000_000_000_5) + event_line("destroy", 1_000_000_000_9)
    first = decoder.feed(wire[:30])
    second = decoder.feed(wire[30:])
    assert first == []
    assert [event.action for event in second] == ["create", "destroy"]
    assert decoder.last_time_nano == 1_000_000_000_9


def test_unknown_fields_are_ignored() -> None:
    (event,) = EventDecoder().feed(event_line("connect", 5, FutureField={"x": [1]}, Actor2=None))
    assert event.action == "connect"


def test_garbage_lines_and_non_events_are_counted_and_skipped() -> None:
    decoder = EventDecoder()
    wire = event_line("create", 1) + b"<html>oops\n" + b"[1,2]\n" + b'{"Type": 5}\n' + event_line("destroy", 2)
    assert [event.action for event in decoder.feed(wire)] == ["create", "destroy"]
    assert decoder.skipped == 3


def test_last_time_nano_never_goes_backwards() -> None:
    decoder = EventDecoder()
    decoder.feed(event_line("create", 50) + event_line("destroy", 20))
    assert decoder.last_time_nano == 50


@settings(deadline=None)  # wall-clock deadlines flake on a loaded shared machine
@given(
    times=st.lists(st.integers(min_value=0, max_value=2**62), max_size=8),
    garbage=st.lists(st.binary(max_size=40).filter(lambda data: b"\n" not in data), max_size=4),
    cut=st.integers(min_value=0, max_value=3000),
)
def test_every_event_survives_interleaved_garbage_and_any_split(
    times: list[int], garbage: list[bytes], cut: int
) -> None:
    lines = [event_line("create", time_nano) for time_nano in times] + [line + b"\n" for line in garbage]
    wire = b"".join(lines)
    decoder = EventDecoder()
    events = decoder.feed(wire[:cut]) + decoder.feed(wire[cut:]) + decoder.finish()
    assert [event.time_nano for event in events if event.action == "create"][: len(times)] == times
    assert decoder.last_time_nano == max([event.time_nano for event in events], default=0)


def test_filters_are_json_string_lists() -> None:
    assert json.loads(encode_filters({"type": ("network", "container"), "event": ["create"]})) == {
        "type": ["network", "container"],
        "event": ["create"],
    }


def test_since_has_nanosecond_precision() -> None:
    assert format_since(1795377475613830319) == "1795377475.613830319"
    assert format_since(5) == "0.000000005"
