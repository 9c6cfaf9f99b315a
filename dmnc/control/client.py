"""The control socket's client side: `dmnc status` and `dmnc doctor` read the running service.

`fetch_snapshot(path)` and `open_event_feed(path)` raise only `ControlError` subclasses, with messages for the user.
"""

from __future__ import annotations

import contextlib
import errno
import grp
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import trio
import trio_websocket

from dmnc.control.messages import (
    StatusEvent,
    StatusFormatError,
    StatusSnapshot,
    decode_event_untrusted,
    decode_snapshot_untrusted,
)
from dmnc.control.protocol import (
    ABNORMAL_CLOSURE,
    DEFAULT_TIMEOUT_S,
    EVENTS_PATH,
    FEED_OVERFLOW_CLOSE_CODE,
    NORMAL_CLOSE_CODES,
    STATUS_PATH,
    ControlError,
    ControlNotRunning,
    ControlPermissionDenied,
    ControlProtocolError,
    EventFeedLost,
)
from dmnc.errors import sole_exception


def _permission_hint(path: Path) -> str:
    try:
        group_id = path.stat().st_gid
        group = grp.getgrgid(group_id).gr_name
    except (OSError, KeyError):
        return "run it with sudo"
    if group_id == 0:
        return "run it with sudo"
    return f"run it with sudo, or add yourself to group '{group}' (then log in again)"


@contextlib.contextmanager
def _client_errors(path: Path, resource: str) -> Iterator[None]:
    """Translate what a client exchange can raise into ControlErrors, unwrapping trio's exception groups.

    trio-websocket raises a rejected handshake from its background reader task, so it arrives through the
    nursery, wrapped in a group, like any error of the caller's own block inside `open_event_feed`.
    """
    try:
        try:
            yield
        except BaseExceptionGroup as group:
            sole = sole_exception(group)
            if sole is None:
                raise
            raise sole from None
    except trio_websocket.ConnectionRejected as rejected:
        raise ControlProtocolError(f"dmnc at {path} refused {resource} (HTTP {rejected.status_code})") from None
    except trio_websocket.HandshakeError as error:
        raise ControlProtocolError(f"no websocket handshake from {path}: {error!r}") from None


async def _connect(path: Path) -> trio.SocketStream:
    try:
        return await trio.open_unix_socket(str(path))
    except FileNotFoundError:
        raise ControlNotRunning(f"dmnc is not running (no control socket at {path})") from None
    except ConnectionRefusedError:
        raise ControlNotRunning(f"dmnc is not running (nothing answers on {path}; a stopped dmnc left it)") from None
    except PermissionError:
        raise ControlPermissionDenied(
            f"permission denied on {path}: only root and dmnc's admin group may read dmnc's status; "
            + _permission_hint(path)
        ) from None
    except OSError as error:
        if error.errno == errno.ENOTDIR:
            raise ControlNotRunning(f"dmnc is not running (no control socket at {path})") from None
        raise ControlError(f"cannot connect to dmnc at {path}: {error.strerror}") from None


async def _open_websocket(nursery: trio.Nursery, path: Path, resource: str) -> trio_websocket.WebSocketConnection:
    stream = await _connect(path)
    try:
        return await trio_websocket.wrap_client_stream(nursery, stream, "localhost", resource)
    except trio_websocket.ConnectionClosed as closed:
        raise ControlProtocolError(f"dmnc at {path} hung up during the websocket handshake ({closed.reason})") from None


async def fetch_snapshot(path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> StatusSnapshot:
    """The running service's status snapshot. Raises a ControlError subclass saying what went wrong."""
    message: str | bytes | None = None
    with trio.move_on_after(timeout_s), _client_errors(path, STATUS_PATH):
        async with trio.open_nursery() as nursery:
            connection = await _open_websocket(nursery, path, STATUS_PATH)
            try:
                message = await connection.get_message()
            except trio_websocket.ConnectionClosed as closed:
                raise ControlProtocolError(f"dmnc at {path} closed without a status ({closed.reason})") from None
            finally:
                await connection.aclose()
    if message is None:
        raise ControlProtocolError(f"dmnc did not answer on {path} within {timeout_s:g} s")
    try:
        return decode_snapshot_untrusted(message)
    except StatusFormatError as error:
        raise ControlProtocolError(f"dmnc at {path} sent a malformed status: {error}") from None


class EventFeed:
    """The live events of a running service, as an async iterator; ends when dmnc stops."""

    def __init__(self, connection: trio_websocket.WebSocketConnection, path: Path) -> None:
        self._connection = connection
        self._path = path

    def __aiter__(self) -> EventFeed:
        return self

    async def __anext__(self) -> StatusEvent:
        try:
            message = await self._connection.get_message()
        except trio_websocket.ConnectionClosed as closed:
            reason = closed.reason
            if reason is not None and reason.code in NORMAL_CLOSE_CODES:
                raise StopAsyncIteration from None
            if reason is not None and reason.code == FEED_OVERFLOW_CLOSE_CODE:
                raise EventFeedLost(f"dmnc dropped this event feed: {reason.reason}") from None
            if reason is None or reason.code == ABNORMAL_CLOSURE:
                raise EventFeedLost(f"the event feed from {self._path} broke off: dmnc exited or was killed") from None
            raise EventFeedLost(
                f"dmnc closed the event feed with code {reason.code} ({reason.name}): {reason.reason or 'no reason'}"
            ) from None
        try:
            return decode_event_untrusted(message)
        except StatusFormatError as error:
            raise ControlProtocolError(f"dmnc at {self._path} sent a malformed event: {error}") from None


@contextlib.asynccontextmanager
async def open_event_feed(path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> AsyncIterator[EventFeed]:
    """Subscribe to the running service's events. Connecting is bounded by `timeout_s`; following is not.

    Errors from the feed, and from the caller's block, come out as themselves, not wrapped in exception groups.
    """
    with _client_errors(path, EVENTS_PATH):
        async with trio.open_nursery() as nursery:
            connection = None
            with trio.move_on_after(timeout_s):
                connection = await _open_websocket(nursery, path, EVENTS_PATH)
            if connection is None:
                raise ControlProtocolError(f"dmnc did not answer on {path} within {timeout_s:g} s")
            try:
                yield EventFeed(connection, path)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await connection.aclose()
