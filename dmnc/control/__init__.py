"""The control socket: `dmnc status` and `dmnc doctor` talk to the running service.

- `protocol`: resource paths, close codes and the `ControlError` family, shared by both sides;
- `messages`: the status snapshot and event objects, and their untrusted decoders (the JSON contract);
- `server`: the service's side (bind, serve, broadcast events);
- `client`: `fetch_snapshot` and `open_event_feed`.
"""

from dmnc.control.client import EventFeed, fetch_snapshot, open_event_feed
from dmnc.control.protocol import (
    ControlError,
    ControlNotRunning,
    ControlPermissionDenied,
    ControlProtocolError,
    ControlSocketBusy,
    EventFeedLost,
)
from dmnc.control.server import (
    BoundControlSocket,
    EventBroadcaster,
    StatusSource,
    admin_group_id,
    bind_control_socket,
    serve_control_socket,
)

__all__ = [
    "BoundControlSocket",
    "ControlError",
    "ControlNotRunning",
    "ControlPermissionDenied",
    "ControlProtocolError",
    "ControlSocketBusy",
    "EventBroadcaster",
    "EventFeed",
    "EventFeedLost",
    "StatusSource",
    "admin_group_id",
    "bind_control_socket",
    "fetch_snapshot",
    "open_event_feed",
    "serve_control_socket",
]
