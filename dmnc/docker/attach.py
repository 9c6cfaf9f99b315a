"""Container attach over a websocket (`GET /containers/{id}/attach/ws`), on the daemon's own socket.

Used for the live output of the setup container: attach first, then start the container, and every line it prints
arrives as it is written. The daemon sends stdout and stderr merged, as binary (or, for some engines, text)
messages; the session ends when the container stops and the daemon closes the websocket normally (a daemon that
dies instead gives ConnectionLost). Use it through
`DockerClient.attach_websocket`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Self, cast

import trio
import trio_websocket

from dmnc.docker.address import DaemonAddress
from dmnc.docker.errors import (
    ApiError,
    ConnectionLost,
    DaemonTimeout,
    DockerError,
    NotFound,
    Translate,
    map_exceptions,
    to_error,
    translation_for,
)
from dmnc.errors import sole_exception

# A close code is a 2-byte status (RFC 6455 section 7.4); 1000 = normal closure.
NORMAL_CLOSURE = 1000


class AttachSession:
    """An open attach websocket: iterate it for output bytes, `send` writes to the container's stdin."""

    def __init__(self, connection: trio_websocket.WebSocketConnection, endpoint: str) -> None:
        self._connection = connection
        self._endpoint = endpoint

    async def receive(self) -> bytes | None:
        """The next piece of output, or None once the container stopped (the daemon closes the websocket normally).
        A connection that ends any other way (daemon killed or restarted: no close frame) raises ConnectionLost."""
        try:
            message = await self._connection.get_message()
        except trio_websocket.ConnectionClosed as closed:
            if closed.reason is not None and closed.reason.code == NORMAL_CLOSURE:
                return None
            raise ConnectionLost(
                f"attach websocket closed abnormally ({closed.reason})", endpoint=self._endpoint
            ) from closed
        return message.encode() if isinstance(message, str) else message

    async def send(self, data: bytes) -> None:
        """Write `data` to the container's stdin (the attach must have been opened with stdin)."""
        try:
            await self._connection.send_message(data)
        except trio_websocket.ConnectionClosed as error:
            raise ConnectionLost("attach websocket closed", endpoint=self._endpoint) from error

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        data = await self.receive()
        if data is None:
            raise StopAsyncIteration
        return data


@asynccontextmanager
async def open_attach_session(
    address: DaemonAddress, resource: str, *, handshake_timeout: float
) -> AsyncIterator[AttachSession]:
    """Open the websocket for `resource` (versioned attach/ws path and query) within `handshake_timeout` seconds."""
    endpoint = f"GET {resource.split('?', 1)[0]}"
    stream: trio.SocketStream | None = None
    try:
        # trio-websocket reads in a background task of this nursery; its errors (a refused handshake arrives there)
        # come back wrapped in an exception group, unwrapped below so callers see one typed error.
        async with trio.open_nursery() as nursery:
            with map_exceptions(endpoint), trio.fail_after(handshake_timeout):
                stream = await address.open_stream()
                connection = await trio_websocket.wrap_client_stream(nursery, stream, address.http_host, resource)
            try:
                yield AttachSession(connection, endpoint)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(handshake_timeout):
                    await connection.aclose(NORMAL_CLOSURE)
    except BaseExceptionGroup as group:
        sole = sole_exception(group)
        if sole is None:
            raise
        translate = translation_for(type(sole), ATTACH_ERRORS)
        raise (sole if translate is None else translate(sole, endpoint)) from group
    finally:
        # The websocket does not always close the socket under it (a refused handshake, a daemon that vanished).
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()


def _rejected(error: BaseException, endpoint: str) -> DockerError:
    """The daemon answered the upgrade with an HTTP error status instead of 101: its own error, typed as for HTTP."""
    rejected = cast("trio_websocket.ConnectionRejected", error)  # ATTACH_ERRORS hands only these here
    body = (rejected.body or b"").decode(errors="replace").strip()
    error_type = NotFound if rejected.status_code == 404 else ApiError
    return error_type(body or "attach refused", endpoint=endpoint, status=rejected.status_code)


_LOST = to_error(ConnectionLost, "attach websocket lost: {error!r}")

ATTACH_ERRORS: Mapping[type[BaseException], Translate] = {
    # trio-websocket's errors from its reader task (ConnectionRejected is the most specific HandshakeError).
    trio_websocket.ConnectionRejected: _rejected,
    trio_websocket.HandshakeError: to_error(DaemonTimeout, "attach websocket handshake failed: {error!r}"),
    trio_websocket.ConnectionClosed: _LOST,
    trio.BrokenResourceError: _LOST,
    OSError: _LOST,
}
"""How the errors of an open attach session become typed errors (dmnc.docker.errors.translation_for picks one)."""
