"""The control socket for real: a Unix socket in a temporary directory, the trio-websocket server and client."""

from __future__ import annotations

import functools
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
import trio_websocket

from dmnc.control import (
    ControlError,
    ControlNotRunning,
    ControlProtocolError,
    ControlSocketBusy,
    EventBroadcaster,
    EventFeed,
    EventFeedLost,
    admin_group_id,
    bind_control_socket,
    fetch_snapshot,
    open_event_feed,
    serve_control_socket,
)
from dmnc.control.messages import StatusEvent
from dmnc.control.server import BoundControlSocket, ClientLimits, instance_lock_path
from tests.conftest import require_root
from tests.integration.control.helpers import SNAPSHOT, FakeSource, Served, wait_for_subscribers

pytestmark = pytest.mark.lab


@pytest.fixture
async def served(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Served]:
    source = FakeSource()
    path = tmp_path / "dmnc.sock"
    scope = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await serve_control_socket(path, source, group_id=os.getgid(), task_status=task_status)

    await nursery.start(serve)
    yield Served(path, source, scope)
    scope.cancel()


async def test_snapshot_round_trip_over_the_socket(served: Served) -> None:
    assert await fetch_snapshot(served.path) == SNAPSHOT
    assert await fetch_snapshot(served.path) == SNAPSHOT
    assert served.source.snapshots_served == 2


async def test_socket_is_root_owned_0660_with_the_admin_group(tmp_path: Path, nursery: trio.Nursery) -> None:
    require_root()
    path = tmp_path / "admin.sock"
    await nursery.start(serve_control_socket, path, FakeSource())
    info = path.lstat()
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_uid == 0
    expected_group = admin_group_id()
    assert info.st_gid == (expected_group if expected_group is not None else os.getgid())
    nursery.cancel_scope.cancel()


async def test_socket_file_is_removed_on_shutdown(served: Served) -> None:
    assert served.path.exists()
    served.scope.cancel()
    with trio.fail_after(5):
        while served.path.exists():
            await trio.sleep(0.01)


async def test_socket_left_by_a_dead_dmnc_is_replaced(tmp_path: Path, nursery: trio.Nursery) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    await nursery.start(serve_control_socket, path, FakeSource())
    assert await fetch_snapshot(path) == SNAPSHOT
    nursery.cancel_scope.cancel()


async def test_second_server_on_the_same_path_is_refused(served: Served) -> None:
    with pytest.raises(ControlSocketBusy, match=r"another dmnc is already running: its control socket .* answers"):
        await serve_control_socket(served.path, FakeSource())
    assert await fetch_snapshot(served.path) == SNAPSHOT


async def test_path_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("mine")
    with pytest.raises(ControlError, match="exists and is not a socket; remove it or choose another path"):
        await serve_control_socket(path, FakeSource())
    assert path.read_text() == "mine"


async def test_directory_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match=r"cannot create the control socket in .*: No such file or directory"):
        await serve_control_socket(tmp_path / "missing" / "dmnc.sock", FakeSource())


async def test_event_feed_delivers_events_in_order_and_ends_when_dmnc_stops(served: Served) -> None:
    received: list[str] = []
    async with open_event_feed(served.path) as feed:
        await wait_for_subscribers(served.source, 1)
        served.source.events.emit("docker.connected", "connected", api_version="1.41")
        served.source.events.emit("route.installed", "172.17.0.0/16 via utun4")
        with trio.fail_after(5):
            async for event in feed:
                received.append(event.kind)
                if len(received) == 2:
                    served.scope.cancel()
    assert received == ["docker.connected", "route.installed"]


async def test_client_leaving_unsubscribes(served: Served) -> None:
    async with open_event_feed(served.path):
        await wait_for_subscribers(served.source, 1)
    await wait_for_subscribers(served.source, 0)
    served.source.events.emit("tunnel.handshake", "still fine")
    assert await fetch_snapshot(served.path) == SNAPSHOT


async def read_all(feed: EventFeed, messages: list[str]) -> None:
    async for event in feed:
        messages.append(event.message)


async def test_follower_that_falls_behind_is_told_why(tmp_path: Path, nursery: trio.Nursery) -> None:
    source = FakeSource(events=EventBroadcaster(buffer_size=2))
    path = await nursery.start(serve_control_socket, tmp_path / "slow.sock", source)
    async with open_event_feed(path) as feed:
        await wait_for_subscribers(source, 1)
        for number in range(5):  # no checkpoint in between: the server cannot drain the queue
            source.events.emit("test.event", f"event {number}")
        messages: list[str] = []
        with pytest.raises(EventFeedLost, match="dmnc dropped this event feed: it fell 2 events behind"):
            await read_all(feed, messages)
    # The queue holds 2; a third goes straight to the server task if it is already waiting for one.
    assert messages == [f"event {number}" for number in range(len(messages))]
    assert 2 <= len(messages) <= 3
    nursery.cancel_scope.cancel()


async def test_missing_socket_means_not_running(tmp_path: Path) -> None:
    with pytest.raises(ControlNotRunning, match=r"dmnc is not running \(no control socket at .*absent.sock\)"):
        await fetch_snapshot(tmp_path / "absent.sock")


async def test_stale_socket_means_not_running(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    with pytest.raises(ControlNotRunning, match=r"nothing answers on .*; a stopped dmnc left it"):
        await fetch_snapshot(path)
    with pytest.raises(ControlNotRunning):
        async with open_event_feed(path):
            pass


async def test_unknown_path_is_rejected_with_404(served: Served) -> None:
    stream = await trio.open_unix_socket(str(served.path))
    with pytest.raises(ExceptionGroup) as raised:  # the library raises it from its reader task
        async with trio.open_nursery() as client_nursery:
            await trio_websocket.wrap_client_stream(client_nursery, stream, "localhost", "/v1/nope")
    rejected = raised.value.exceptions[0]
    assert isinstance(rejected, trio_websocket.ConnectionRejected)
    assert rejected.status_code == 404
    assert rejected.body == b"unknown path; use /v1/status or /v1/events\n"


async def test_garbage_and_silent_clients_do_not_disturb_the_server(tmp_path: Path, nursery: trio.Nursery) -> None:
    path = tmp_path / "robust.sock"
    await nursery.start(
        lambda task_status: serve_control_socket(
            path, FakeSource(), group_id=os.getgid(), handshake_timeout_s=0.2, task_status=task_status
        )
    )
    garbage = await trio.open_unix_socket(str(path))
    await garbage.send_all(b"\x16\x03\x01 not http at all\r\n\r\n" * 10)
    silent = await trio.open_unix_socket(str(path))
    assert await fetch_snapshot(path) == SNAPSHOT
    with trio.fail_after(5):
        while await silent.receive_some(1024):
            pass  # the server closes a client that never completes the handshake
    await garbage.aclose()
    await silent.aclose()
    assert await fetch_snapshot(path) == SNAPSHOT
    nursery.cancel_scope.cancel()


async def serve_raw(path: Path, handler: object, nursery: trio.Nursery) -> None:
    """A hostile or broken server on `path`: `handler(stream)` does whatever it wants with each connection."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(4)
    await nursery.start(trio.serve_listeners, handler, [trio.SocketListener(sock)])


async def test_malformed_status_is_a_protocol_error(tmp_path: Path, nursery: trio.Nursery) -> None:
    path = tmp_path / "liar.sock"

    async def lie(stream: trio.SocketStream) -> None:
        async with trio.open_nursery() as inner:
            request = await trio_websocket.wrap_server_stream(inner, stream)
            connection = await request.accept()
            await connection.send_message('{"version": "9", "tunnel": []}')
            await connection.aclose()

    await serve_raw(path, lie, nursery)
    with pytest.raises(
        ControlProtocolError, match=r"sent a malformed status: tunnel: expected an object, got an array"
    ):
        await fetch_snapshot(path)
    nursery.cancel_scope.cancel()


async def test_server_that_never_answers_times_out(tmp_path: Path, nursery: trio.Nursery) -> None:
    path = tmp_path / "mute.sock"

    async def say_nothing(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    await serve_raw(path, say_nothing, nursery)
    with pytest.raises(ControlProtocolError, match=r"dmnc did not answer on .* within 0.2 s"):
        await fetch_snapshot(path, timeout_s=0.2)
    with pytest.raises(ControlProtocolError, match=r"dmnc did not answer on .* within 0.2 s"):
        async with open_event_feed(path, timeout_s=0.2):
            pass
    nursery.cancel_scope.cancel()


async def test_plain_http_server_is_a_protocol_error(tmp_path: Path, nursery: trio.Nursery) -> None:
    path = tmp_path / "http.sock"

    async def http_only(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await stream.aclose()

    await serve_raw(path, http_only, nursery)
    with pytest.raises(ControlProtocolError, match=r"refused /v1/status \(HTTP 200\)"):
        await fetch_snapshot(path)
    nursery.cancel_scope.cancel()


async def test_binding_early_makes_the_socket_the_single_instance_check(tmp_path: Path, nursery: trio.Nursery) -> None:
    path = tmp_path / "early.sock"
    bound = await bind_control_socket(path, group_id=os.getgid())
    with pytest.raises(ControlSocketBusy, match="another dmnc is already running"):
        await bind_control_socket(path, group_id=os.getgid())
    served_at = await nursery.start(serve_control_socket, bound, FakeSource())
    assert served_at == path
    assert await fetch_snapshot(path) == SNAPSHOT
    nursery.cancel_scope.cancel()


async def test_a_bound_socket_closed_without_serving_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "unused.sock"
    bound = await bind_control_socket(path, group_id=os.getgid())
    assert path.exists()
    await bound.aclose()
    assert not path.exists()


async def test_closing_does_not_remove_a_successors_socket(tmp_path: Path) -> None:
    path = tmp_path / "replaced.sock"
    first = await bind_control_socket(path, group_id=os.getgid())
    # As if removed behind its back, lock file included, and a new dmnc took the path over.
    path.unlink()
    instance_lock_path(path).unlink()
    second = await bind_control_socket(path, group_id=os.getgid())
    await first.aclose()
    assert path.exists()
    await second.aclose()
    assert not path.exists()


async def test_dmncs_binding_at_the_same_moment_let_exactly_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "raced.sock"
    bound: list[BoundControlSocket] = []
    refused: list[ControlSocketBusy] = []

    async def attempt() -> None:
        try:
            bound.append(await bind_control_socket(path, group_id=os.getgid()))
        except ControlSocketBusy as busy:
            refused.append(busy)

    for _ in range(20):  # each round, eight at once: the claim-then-bind race needs no luck to show
        async with trio.open_nursery() as racers:
            for _ in range(8):
                racers.start_soon(attempt)
        assert len(bound) == 1, f"{len(bound)} dmncs bound {path} at once"
        assert len(refused) == 7
        assert all(str(busy).startswith("another dmnc is already running") for busy in refused)
        await bound.pop().aclose()
        refused.clear()


async def test_the_instance_lock_is_held_until_the_socket_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "locked.sock"
    bound = await bind_control_socket(path, group_id=os.getgid())
    path.unlink()  # the socket file alone gone: the lock still tells the next dmnc that one runs
    with pytest.raises(
        ControlSocketBusy, match=r"another dmnc is already running: it holds the lock .*locked\.sock\.lock"
    ):
        await bind_control_socket(path, group_id=os.getgid())
    await bound.aclose()
    await (await bind_control_socket(path, group_id=os.getgid())).aclose()


async def serve_events_then(path: Path, nursery: trio.Nursery, end: str) -> None:
    """A server that sends one event and then ends the connection as `end` says: "drop" or "close 1011"."""

    async def one_event(stream: trio.SocketStream) -> None:
        async with trio.open_nursery() as inner:
            request = await trio_websocket.wrap_server_stream(inner, stream)
            connection = await request.accept()
            await connection.send_message(StatusEvent(1.0, "test.event", "only one").to_json())
            if end == "drop":
                await stream.aclose()
            else:
                await connection.aclose(1011, "internal error")
            inner.cancel_scope.cancel()

    await serve_raw(path, one_event, nursery)


@pytest.mark.parametrize(
    ("end", "message"),
    [
        ("drop", r"the event feed from .* broke off: dmnc exited or was killed"),
        ("close", r"dmnc closed the event feed with code 1011 \(INTERNAL_ERROR\): internal error"),
    ],
)
async def test_feed_ending_abnormally_is_an_error(
    tmp_path: Path, nursery: trio.Nursery, end: str, message: str
) -> None:
    path = tmp_path / f"{end}.sock"
    await serve_events_then(path, nursery, end)
    messages: list[str] = []
    with trio.fail_after(5):
        async with open_event_feed(path) as feed:
            with pytest.raises(EventFeedLost, match=message):
                await read_all(feed, messages)
    assert messages == ["only one"]
    nursery.cancel_scope.cancel()


# Long enough that a client turned away at once cannot be mistaken for one dropped by the handshake timeout.
IDLE_HANDSHAKE_S = 8.0


async def test_clients_beyond_the_connection_cap_are_turned_away_at_once(tmp_path: Path, nursery: trio.Nursery) -> None:
    serve = functools.partial(
        serve_control_socket, limits=ClientLimits(connections=2), handshake_timeout_s=IDLE_HANDSHAKE_S
    )
    path = await nursery.start(serve, tmp_path / "capped.sock", FakeSource())
    idle = []
    for _ in range(2):  # connected, never a handshake: each holds a slot until the handshake timeout
        client = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await client.connect(str(path))
        idle.append(client)
    await trio.testing.wait_all_tasks_blocked()
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as turned_away:
        await turned_away.connect(str(path))
        with trio.fail_after(5):
            assert await turned_away.recv(1) == b""  # closed by the server without waiting for anything
    with trio.fail_after(IDLE_HANDSHAKE_S + 5):
        while True:  # the slots free up when the server drops the idle clients
            try:
                assert await fetch_snapshot(path) == SNAPSHOT
                break
            except ControlError:
                await trio.sleep(0.05)
    for client in idle:
        client.close()
    nursery.cancel_scope.cancel()


async def test_a_follower_beyond_the_cap_is_told_to_try_again_later(tmp_path: Path, nursery: trio.Nursery) -> None:
    source = FakeSource()
    serve = functools.partial(serve_control_socket, limits=ClientLimits(followers=1))
    path = await nursery.start(serve, tmp_path / "followers.sock", source)
    async with open_event_feed(path):
        await wait_for_subscribers(source, 1)
        async with open_event_feed(path) as second:
            with pytest.raises(EventFeedLost, match=r"code 1013 .*: 1 followers already"):
                await read_all(second, [])
    nursery.cancel_scope.cancel()


async def test_a_follower_that_stops_reading_is_dropped_after_the_send_timeout(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    # A queue too deep to overflow: only the send timeout can drop this client.
    source = FakeSource(events=EventBroadcaster(buffer_size=10_000))
    serve = functools.partial(serve_control_socket, limits=ClientLimits(send_timeout_s=0.5))
    path = await nursery.start(serve, tmp_path / "stalled.sock", source)
    async with open_event_feed(path):  # never read: the socket buffers fill and the server's send waits
        await wait_for_subscribers(source, 1)
        for number in range(200):
            source.events.emit("test.event", f"{number} " + "x" * 65_536)
        await wait_for_subscribers(source, 0)  # bounded by wait_for_subscribers' own timeout
    nursery.cancel_scope.cancel()
