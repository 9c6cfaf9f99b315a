"""Decoding `GET /events` and the query it needs; the HTTP side is `DockerClient.events`.

The stream is one JSON object per line. `EventDecoder` reassembles lines split across reads, ignores unknown fields,
and counts (then drops) garbage lines and objects that are not events, so one bad line never ends a watch.
It remembers the newest `timeNano` seen: reconnecting with `since=format_since(decoder.last_time_nano)` resumes the
stream without a gap (the daemon replays events at or after `since`, so the event at exactly that time may repeat;
consumers reconcile state rather than count events, which makes a repeat harmless).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from dmnc.docker.models import Event
from dmnc.docker.streams import JsonModelDecoder

EventFilters = Mapping[str, Sequence[str]]
"""Filters as the Engine API takes them, e.g. {"type": ["network", "container"], "event": ["create", "destroy"]}."""

NANOSECONDS_PER_SECOND = 1_000_000_000


def encode_filters(filters: EventFilters) -> str:
    """The `filters` query parameter: a JSON object of string lists (`map[string][]string` in the Engine API)."""
    return json.dumps({key: list(values) for key, values in filters.items()}, separators=(",", ":"))


def format_since(time_nano: int) -> str:
    """`since`/`until` with nanosecond precision: the Engine API accepts "<seconds>.<nanoseconds>"."""
    seconds, nanoseconds = divmod(time_nano, NANOSECONDS_PER_SECOND)
    return f"{seconds}.{nanoseconds:09d}"


class EventDecoder(JsonModelDecoder[Event]):
    """Bytes of an events body in, Events out; see the module docstring."""

    def __init__(self) -> None:
        super().__init__(Event.from_json_untrusted)
        self.last_time_nano = 0
        """timeNano of the newest event decoded so far (0 before the first)."""

    def _models(self, values: list[object]) -> list[Event]:
        events = super()._models(values)
        for event in events:
            self.last_time_nano = max(self.last_time_nano, event.time_nano)
        return events
