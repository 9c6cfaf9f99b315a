"""The control protocol shared by the server and the client: resource paths, close codes and the errors.

Websocket over a local Unix socket, text messages of JSON (the objects are in `dmnc.control.messages`):
- `GET /v1/status`: the server sends one snapshot and closes (1000).
- `GET /v1/events`: the server sends one event per message as they happen. It closes with 1001 when dmnc stops,
  and with `FEED_OVERFLOW_CLOSE_CODE` when the client reads so slowly that the server's buffer filled.

New fields reach clients through the messages' `schema` number (`dmnc.control.messages`); the `/v1` prefix changes
only for a change those schema rules do not allow (a field removed, renamed or given another meaning).
"""

from __future__ import annotations

STATUS_PATH = "/v1/status"
EVENTS_PATH = "/v1/events"
# RFC 6455 section 7.4.2: 4000-4999 are for private use.
FEED_OVERFLOW_CLOSE_CODE = 4000
# RFC 6455 section 7.4.1: 1000 normal closure, 1001 "going away" (the server shuts down).
NORMAL_CLOSE_CODES = frozenset({1000, 1001})
# RFC 6455 section 7.4.1: 1006, the connection dropped without a close frame (never sent on the wire).
ABNORMAL_CLOSURE = 1006
DEFAULT_TIMEOUT_S = 5.0


class ControlError(Exception):
    """Any failure of the control socket, server or client side; the message is meant for the user."""


class ControlSocketBusy(ControlError):
    """Another process (another dmnc) already answers on the control socket path."""


class ControlNotRunning(ControlError):
    """No dmnc answers: the socket file is missing, or left behind by a dmnc that is gone."""


class ControlPermissionDenied(ControlError):
    """The user may not connect to the control socket."""


class ControlProtocolError(ControlError):
    """The peer answered something that is not the control protocol, or not in time."""


class EventFeedLost(ControlError):
    """The event feed ended abnormally (dropped for reading too slowly, or the connection broke)."""
