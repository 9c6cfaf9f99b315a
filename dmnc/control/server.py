"""The control socket's server side: the running service answers `dmnc status` over a local Unix socket.

Access. The socket file is created owned by root (the service's user) with mode 0660 and the group of the first of
`ADMIN_GROUPS` that exists on the machine: `admin` (macOS administrators), `wheel` (Fedora, Arch), `sudo` (Debian,
Ubuntu). Members of that group run `dmnc status` without sudo; everyone else gets "permission denied". Without any
of those groups only root can connect. The file is bound in a private 0700 directory, given its mode and group, and
only then renamed into place, so there is no moment where it is reachable with looser permissions.

`bind_control_socket(path)` first, at startup, turns the socket into the single-instance check, with a lock file
beside it held for the life of the process (`instance_lock_path`) so that two started at once cannot both pass. The
bound socket is then passed to `serve_control_socket` under `nursery.start()`, fed by any `StatusSource` (a
`snapshot()` callable and an `EventBroadcaster` the service publishes to). The protocol is in `dmnc.control.protocol`.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio
import trio_websocket

from dmnc.control.messages import DetailValue, StatusEvent, StatusSnapshot
from dmnc.control.protocol import (
    DEFAULT_TIMEOUT_S,
    EVENTS_PATH,
    FEED_OVERFLOW_CLOSE_CODE,
    STATUS_PATH,
    ControlError,
    ControlSocketBusy,
)

logger = logging.getLogger("dmnc.control")

CONTROL_SOCKET_MODE = 0o660
# Administrators' groups, first existing wins: macOS, then Fedora/Arch, then Debian/Ubuntu.
ADMIN_GROUPS = ("admin", "wheel", "sudo")
# Events a follower may lag behind before it is dropped; the service never waits for a slow reader.
EVENT_BUFFER = 256
_LISTEN_BACKLOG = 16
# Bounds on what local clients may cost the service, whose event loop also carries the tunnel: connections open
# at once, `dmnc status --follow` clients among them, and how long one send may wait for a client to read.
MAX_CONNECTIONS = 64
MAX_FOLLOWERS = 16
SEND_TIMEOUT_S = DEFAULT_TIMEOUT_S
# RFC 6455 section 7.4 leaves 1013 to the IANA registry: "Try Again Later".
TRY_AGAIN_LATER_CLOSE_CODE = 1013


# ---------------------------------------------------------------------------------------------------------------------
# Event broadcasting


@dataclass
class EventSubscription:
    """One follower's queue. `overflowed` is set when the service dropped it for lagging `EVENT_BUFFER` behind."""

    receive: trio.MemoryReceiveChannel[StatusEvent]
    overflowed: bool = False


class EventBroadcaster:
    """Fans events out to every current subscriber without ever blocking the publisher.

    Call it from the trio thread. A subscriber whose buffer is full is cut off (its channel closes after the queued
    events, `overflowed` set) rather than slowing down the service or silently missing events.
    """

    def __init__(self, buffer_size: int = EVENT_BUFFER) -> None:
        self._buffer_size = buffer_size
        self._subscribers: dict[trio.MemorySendChannel[StatusEvent], EventSubscription] = {}

    @property
    def buffer_size(self) -> int:
        return self._buffer_size

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, event: StatusEvent) -> None:
        for send, subscription in list(self._subscribers.items()):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                subscription.overflowed = True
                send.close()
                del self._subscribers[send]
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                del self._subscribers[send]

    def emit(self, kind: str, message: str, /, **details: DetailValue) -> StatusEvent:
        """Publish an event stamped with the current time; returns it (handy for logging the same line)."""
        event = StatusEvent(time=time.time(), kind=kind, message=message, details=details)
        self.publish(event)
        return event

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[EventSubscription]:
        send, receive = trio.open_memory_channel[StatusEvent](self._buffer_size)
        subscription = EventSubscription(receive)
        self._subscribers[send] = subscription
        try:
            yield subscription
        finally:
            self._subscribers.pop(send, None)
            send.close()
            receive.close()


class StatusSource(Protocol):
    """What the control socket serves: the current snapshot on demand and the service's event broadcaster."""

    def snapshot(self) -> StatusSnapshot: ...

    @property
    def events(self) -> EventBroadcaster: ...


# ---------------------------------------------------------------------------------------------------------------------
# Server


def admin_group_id(candidates: tuple[str, ...] = ADMIN_GROUPS) -> int | None:
    """The id of the first existing group of `candidates`, or None when none exists."""
    for name in candidates:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            continue
    return None


def _claim_path(path: Path) -> None:
    """Make `path` free for a new socket: remove a socket left by a dead dmnc, refuse anything else."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise ControlError(f"cannot use control socket path {path}: {error.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"control socket path {path} exists and is not a socket; remove it or choose another path")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(DEFAULT_TIMEOUT_S)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            logger.info("removing the control socket %s left behind by a dmnc that is gone", path)
            path.unlink(missing_ok=True)
            return
        except TimeoutError:
            raise ControlSocketBusy(f"another process holds the control socket {path} and does not answer") from None
        except OSError as error:
            raise ControlError(f"cannot check control socket {path}: {error.strerror}") from None
    raise ControlSocketBusy(f"another dmnc is already running: its control socket {path} answers")


def instance_lock_path(control_socket: Path) -> Path:
    """The lock file beside the control socket that one dmnc holds for its whole life."""
    return control_socket.with_name(control_socket.name + ".lock")


def _take_instance_lock(control_socket: Path) -> int:
    """Lock the file beside the control socket (flock(2), exclusive, non-blocking); the descriptor holds the lock
    until it is closed, or the process ends. Two dmncs started at the same moment both find no socket to answer:
    the lock lets only one of them go on to bind it."""
    lock_path = instance_lock_path(control_socket)
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise ControlError(
            f"cannot create the control socket in {lock_path.parent}: {error.strerror} (its lock file {lock_path.name})"
        ) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise ControlSocketBusy(f"another dmnc is already running: it holds the lock {lock_path}") from None
    except OSError as error:
        os.close(descriptor)
        raise ControlError(f"cannot lock {lock_path}: {error.strerror}") from None
    return descriptor


def _bind_socket(path: Path, group_id: int | None) -> tuple[socket.socket, os.stat_result, int]:
    """Take the instance lock, then bind a listening socket at `path` with its final mode and group before anyone
    can reach it. Returns the socket, its file's identity and the lock's descriptor.

    Blocking file system work: run it in a thread.
    """
    _claim_path(path)
    lock = _take_instance_lock(path)
    try:
        sock, identity = _bind_claimed(path, group_id)
    except BaseException:
        os.close(lock)
        raise
    return sock, identity, lock


def _bind_claimed(path: Path, group_id: int | None) -> tuple[socket.socket, os.stat_result]:
    try:
        staging = Path(tempfile.mkdtemp(prefix=".dmnc-control-", dir=path.parent))
    except OSError as error:
        raise ControlError(f"cannot create the control socket in {path.parent}: {error.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        staged = staging / "sock"
        sock.bind(str(staged))
        if group_id is not None:
            os.chown(staged, -1, group_id)
        os.chmod(staged, CONTROL_SOCKET_MODE)
        sock.listen(_LISTEN_BACKLOG)
        os.rename(staged, path)
        return sock, path.lstat()
    except OSError as error:
        sock.close()
        raise ControlError(f"cannot create the control socket {path}: {error.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class BoundControlSocket:
    """A control socket bound and listening at `path`, not yet serving; whoever holds it owns the path.

    Binding early makes the socket double as the single-instance check: a second dmnc learns that one is running
    (ControlSocketBusy) before it touches the network. Closing removes the socket file if it is still this one.
    """

    def __init__(self, path: Path, sock: socket.socket, identity: os.stat_result, lock: int) -> None:
        self.path = path
        self.listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        self._identity = identity
        self._lock: int | None = lock

    async def aclose(self) -> None:
        with contextlib.suppress(OSError):
            current = self.path.lstat()
            if (current.st_dev, current.st_ino) == (self._identity.st_dev, self._identity.st_ino):
                self.path.unlink()
        with trio.CancelScope(shield=True):
            await self.listener.aclose()
        # Released last, once the socket is gone; the lock file stays: unlinking it would let a newcomer lock a
        # fresh file while another still waits on the old one.
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


async def bind_control_socket(path: Path, *, group_id: int | None = None) -> BoundControlSocket:
    """Create the control socket at `path` (mode 0660, group `group_id` or `admin_group_id()`), listening.

    Raises ControlSocketBusy when another dmnc answers on `path`, ControlError when it cannot be created. A socket
    file left by a dmnc that is gone is replaced.
    """
    chosen_group = admin_group_id() if group_id is None else group_id
    if chosen_group is None:
        logger.warning("none of the groups %s exists: only root can run `dmnc status`", ", ".join(ADMIN_GROUPS))
    sock, identity, lock = await trio.to_thread.run_sync(_bind_socket, path, chosen_group)
    return BoundControlSocket(path, sock, identity, lock)


async def serve_control_socket(
    where: Path | BoundControlSocket,
    source: StatusSource,
    *,
    group_id: int | None = None,
    handshake_timeout_s: float = DEFAULT_TIMEOUT_S,
    limits: ClientLimits | None = None,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve status and events on the control socket until cancelled, then remove the socket file.

    `where` is a path to bind now (see `bind_control_socket`, which `group_id` goes to) or a socket bound earlier,
    which this call then owns and closes. It never returns on its own; readiness (the socket accepts connections)
    is reported through `task_status`. A client that does not complete the websocket handshake within
    `handshake_timeout_s` is dropped, and so are clients beyond `limits` and one that does not read what is sent to
    it within `limits.send_timeout_s`: none of them can hold up the service.
    """
    limits = ClientLimits() if limits is None else limits
    connections = 0
    bound = where if isinstance(where, BoundControlSocket) else await bind_control_socket(where, group_id=group_id)
    try:
        async with trio.open_nursery() as nursery:

            async def handle(stream: trio.SocketStream) -> None:
                nonlocal connections
                if connections >= limits.connections:
                    logger.debug("dropping a control client: %d connections are open already", connections)
                    await stream.aclose()
                    return
                connections += 1
                try:
                    await _serve_connection(stream, source, handshake_timeout_s, limits)
                except Exception:
                    # A bug met by one client must not take the service (and the tunnel) down with it.
                    logger.exception("failed to serve a control client")
                finally:
                    connections -= 1

            await nursery.start(trio.serve_listeners, handle, [bound.listener])
            logger.debug("control socket ready at %s", bound.path)
            task_status.started(bound.path)
            await trio.sleep_forever()
    finally:
        await bound.aclose()


@dataclass(frozen=True)
class ClientLimits:
    """What the control socket grants its clients at most (see MAX_CONNECTIONS)."""

    connections: int = MAX_CONNECTIONS
    followers: int = MAX_FOLLOWERS
    send_timeout_s: float = SEND_TIMEOUT_S


async def _serve_connection(
    stream: trio.SocketStream, source: StatusSource, handshake_timeout_s: float, limits: ClientLimits
) -> None:
    async with trio.open_nursery() as nursery:
        request = None
        with trio.move_on_after(handshake_timeout_s):
            request = await trio_websocket.wrap_server_stream(nursery, stream)
        try:
            if request is None:
                logger.debug("dropping a control client that sent no websocket handshake in time")
            elif request.path == STATUS_PATH:
                connection = await request.accept()
                with trio.move_on_after(limits.send_timeout_s) as sending:
                    await connection.send_message(source.snapshot().to_json())
                if sending.cancelled_caught:
                    logger.warning("dropped a `dmnc status` client that did not read its answer")
                else:
                    await _close(connection, 1000, "")
            elif request.path == EVENTS_PATH and source.events.subscriber_count >= limits.followers:
                reason = f"{limits.followers} followers already"
                await _close(await request.accept(), TRY_AGAIN_LATER_CLOSE_CODE, reason)
            elif request.path == EVENTS_PATH:
                await _serve_events(await request.accept(), source.events, limits.send_timeout_s)
            else:
                await request.reject(404, body=f"unknown path; use {STATUS_PATH} or {EVENTS_PATH}\n".encode())
        except trio_websocket.ConnectionClosed:
            logger.debug("a control client went away")
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def _serve_events(
    connection: trio_websocket.WebSocketConnection, events: EventBroadcaster, send_timeout_s: float
) -> None:
    close_code, close_reason = 1001, "dmnc is stopping"
    try:
        with events.subscribe() as subscription:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_when_client_leaves, connection, nursery.cancel_scope)
                stalled = False
                with contextlib.suppress(trio_websocket.ConnectionClosed):
                    async for event in subscription.receive:
                        with trio.move_on_after(send_timeout_s) as sending:
                            await connection.send_message(event.to_json())
                        if sending.cancelled_caught:
                            stalled = True
                            break
                if stalled:
                    close_code, close_reason = FEED_OVERFLOW_CLOSE_CODE, f"it read nothing for {send_timeout_s:g} s"
                    logger.warning("dropped a `dmnc status --follow` client that stopped reading")
                elif subscription.overflowed:
                    close_code, close_reason = FEED_OVERFLOW_CLOSE_CODE, f"it fell {events.buffer_size} events behind"
                    logger.warning("dropped a `dmnc status --follow` client that read too slowly")
                nursery.cancel_scope.cancel()
    finally:
        await _close(connection, close_code, close_reason)


async def _cancel_when_client_leaves(connection: trio_websocket.WebSocketConnection, scope: trio.CancelScope) -> None:
    """The feed only sends; reading is how a client's departure (or close frame) becomes visible."""
    with contextlib.suppress(trio_websocket.ConnectionClosed):
        while True:
            await connection.get_message()
    scope.cancel()


async def _close(connection: trio_websocket.WebSocketConnection, code: int, reason: str) -> None:
    # Shielded so that clients get a proper close frame when the service itself is being cancelled.
    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
        await connection.aclose(code, reason)
