"""The macOS route manager's logic against a fake kernel that speaks PF_ROUTE bytes (no macOS here; the real
routing socket runs in the macOS CI workflow)."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import struct

import pytest
import trio
import trio.testing

from dmnc.routes import (
    InstalledRoute,
    RouteEventKind,
    RouteExistsError,
    RouteOperationError,
    add_route,
    delete_route,
    pfroute,
)
from dmnc.routes.darwin import (
    LOOKUP_TIMEOUT_S,
    MONITOR_RESYNC_INTERVAL_S,
    MONITOR_SOCKET_BUFFER_BYTES,
    DarwinRouteManager,
    open_monitor_socket,
)
from dmnc.routes.manager import NextHop
from dmnc.routes.policy import NetworkInfo, PolicyConfig
from dmnc.routes.reconcile import RouteReconciler

net = ipaddress.ip_network
UTUN_INDEX = 21
OTHER_PID = 5150


class FakeMonitorSource:
    def __init__(self) -> None:
        self.send, self.receive_channel = trio.open_memory_channel[bytes | OSError](100)

    async def receive(self) -> bytes:
        item = await self.receive_channel.receive()
        if isinstance(item, OSError):
            raise item
        return item

    def close(self) -> None:
        self.send.close()


class FakeLookupSocket:
    """A routing socket for one RTM_GET: the reply is queued as the write returns, after another process's message
    (a fresh routing socket receives everybody's), as xnu's route_output does (bsd/net/rtsock.c)."""

    def __init__(self, xnu: FakeXnu) -> None:
        self._xnu = xnu
        self.send_channel, self.receive_channel = trio.open_memory_channel[bytes](10)
        self.closed = False

    async def send(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self._xnu.lookups.append(data)
        reply = self._xnu.answer_lookup(data)
        unrelated = pfroute.RouteSocketMessage(pfroute.RTM_ADD, net("198.51.100.0/24"), 0x803, 4, 4, pid=OTHER_PID)
        self.send_channel.send_nowait(pfroute.encode_route_message(unrelated))
        if reply is not None:
            self.send_channel.send_nowait(reply)

    async def receive(self) -> bytes:
        return await self.receive_channel.receive()

    def close(self) -> None:
        self.closed = True
        self._xnu.lookup_sockets_open -= 1


def link_sockaddr(index: int, name: str) -> bytes:
    """An interface's link address as RTA_IFP carries it (bsd/net/if_dl.h sockaddr_dl, 20 bytes for a utun)."""
    encoded = name.encode()
    return bytes([20, pfroute.AF_LINK, index & 0xFF, index >> 8, 0xFF, len(encoded), 0, 0]) + encoded.ljust(12, b"\0")


class FakeXnu:
    """One route per destination, like xnu's non-scoped table; echoes every change to all monitors with the
    route's own flags and index (route_output's `report:` path)."""

    def __init__(self) -> None:
        self.table: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, pfroute.RouteSocketMessage] = {}
        self.sent: list[pfroute.RouteSocketMessage] = []
        self.monitors: list[FakeMonitorSource] = []
        self.dump_error: OSError | None = None
        self.refuse: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, int] = {}  # destination -> errno of write
        self.closed = False
        self.lookups: list[bytes] = []
        self.lookup_sockets_open = 0
        self.silent_lookups = False  # the reply never comes
        self.interface_names = {UTUN_INDEX: "utun20", 3: "utun3", 4: "en0"}

    def open_lookup(self) -> FakeLookupSocket:
        self.lookup_sockets_open += 1
        return FakeLookupSocket(self)

    def answer_lookup(self, data: bytes) -> bytes | None:
        """The reply to an RTM_GET: the longest unscoped match, with RTA_IFP naming its interface; OSError(ESRCH)
        when nothing matches."""
        header = pfroute.RT_MSGHDR.unpack_from(data)
        assert header[2] == pfroute.RTM_GET
        assert header[5] == pfroute.RTA_DST | pfroute.RTA_IFP
        request = pfroute.decode_route_message_untrusted(data)
        assert request is not None
        assert request.destination is not None
        address = request.destination.network_address
        matches = [
            route
            for route in self.table.values()
            if route.destination is not None
            and route.destination.version == address.version
            and address in route.destination
            and not route.flags & pfroute.RTF_IFSCOPE
        ]
        if not matches:
            raise OSError(errno.ESRCH, os.strerror(errno.ESRCH))
        if self.silent_lookups:
            return None
        best = max(matches, key=lambda route: route.destination.prefixlen if route.destination else -1)
        reply = pfroute.encode_route_message(
            pfroute.RouteSocketMessage(
                pfroute.RTM_GET,
                best.destination,
                best.flags | pfroute.RTF_DONE,
                best.interface_index,
                best.gateway_interface,
                best.gateway,
                pid=header[6],
                seq=header[7],
            )
        )
        ifp = link_sockaddr(best.interface_index, self.interface_names.get(best.interface_index, ""))
        patched = bytearray(reply + ifp)
        struct.pack_into("=H", patched, 0, len(patched))
        struct.pack_into("=i", patched, 12, struct.unpack_from("=i", reply, 12)[0] | pfroute.RTA_IFP)
        return bytes(patched)

    def _echo(self, message_type: int, route: pfroute.RouteSocketMessage, pid: int) -> None:
        echoed = pfroute.RouteSocketMessage(
            message_type, route.destination, route.flags, route.interface_index, route.gateway_interface, pid=pid
        )
        for monitor in self.monitors:
            monitor.send.send_nowait(pfroute.encode_route_message(echoed))

    async def send(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        message = pfroute.decode_route_message_untrusted(data)
        assert message is not None
        assert message.destination is not None
        sockaddr = 16 if message.destination.version == 4 else 28
        gateway = 20 if message.gateway_interface is not None else sockaddr  # sockaddr_dl, or an IP gateway's
        assert len(data) == 92 + sockaddr + gateway + (0 if message.flags & pfroute.RTF_HOST else sockaddr)
        self.sent.append(message)
        if message.destination in self.refuse:
            code = self.refuse[message.destination]
            raise OSError(code, os.strerror(code))
        if message.message_type == pfroute.RTM_ADD:
            if message.destination in self.table:
                raise OSError(errno.EEXIST, "File exists")
            route = pfroute.RouteSocketMessage(
                pfroute.RTM_GET,
                message.destination,
                message.flags,
                interface_index=message.gateway_interface or 0,
                gateway_interface=message.gateway_interface,
                gateway=message.gateway,
            )
            self.table[message.destination] = route
            self._echo(pfroute.RTM_ADD, route, message.pid)
        elif message.message_type == pfroute.RTM_DELETE:
            if message.destination not in self.table:
                raise OSError(errno.ESRCH, "No such process")
            self._echo(pfroute.RTM_DELETE, self.table.pop(message.destination), message.pid)

    async def dump(self) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.dump_error is not None:
            raise self.dump_error
        return b"".join(pfroute.encode_route_message(route) for route in self.table.values())

    def open_monitor(self) -> FakeMonitorSource:
        source = FakeMonitorSource()
        self.monitors.append(source)
        return source

    def close(self) -> None:
        self.closed = True

    def other_program(self, message_type: int, destination: str, interface_index: int = 4, flags: int = 0x803) -> None:
        """Another process (pid OTHER_PID) adds or deletes a route."""
        route = pfroute.RouteSocketMessage(
            pfroute.RTM_GET, net(destination), flags, interface_index, gateway_interface=interface_index
        )
        if message_type == pfroute.RTM_ADD:
            self.table[route.destination] = route  # type: ignore[index]
        else:
            route = self.table.pop(net(destination))
        self._echo(message_type, route, OTHER_PID)


@pytest.fixture
def xnu() -> FakeXnu:
    return FakeXnu()


@pytest.fixture
def manager(xnu: FakeXnu) -> DarwinRouteManager:
    return DarwinRouteManager("utun20", UTUN_INDEX, xnu)


async def test_add_sends_route_add_interface_with_proto1_and_lists_it_as_ours(
    xnu: FakeXnu, manager: DarwinRouteManager
) -> None:
    await add_route(manager, net("172.17.0.0/16"))
    await add_route(manager, net("fd00:d0c::/64"))
    [first, _] = xnu.sent
    assert first.message_type == pfroute.RTM_ADD
    assert first.flags == pfroute.RTF_UP | pfroute.RTF_STATIC | pfroute.RTF_PROTO1
    assert first.gateway_interface == UTUN_INDEX
    assert first.pid == os.getpid()
    assert {route.destination for route in await manager.list_ours()} == {net("172.17.0.0/16"), net("fd00:d0c::/64")}


async def test_full_length_destination_is_added_as_host_route(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    await add_route(manager, net("10.9.9.9/32"))
    assert xnu.sent[0].flags & pfroute.RTF_HOST


async def test_existing_route_is_not_replaced_unless_asked(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    xnu.other_program(pfroute.RTM_ADD, "172.17.0.0/16")
    with pytest.raises(RouteExistsError):
        await add_route(manager, net("172.17.0.0/16"))
    assert xnu.table[net("172.17.0.0/16")].interface_index == 4
    await add_route(manager, net("172.17.0.0/16"), replace=True)
    assert [message.message_type for message in xnu.sent] == [
        pfroute.RTM_ADD,
        pfroute.RTM_ADD,
        pfroute.RTM_DELETE,
        pfroute.RTM_ADD,
    ]
    assert xnu.table[net("172.17.0.0/16")].interface_index == UTUN_INDEX


async def test_delete_never_touches_another_programs_route(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    xnu.other_program(pfroute.RTM_ADD, "172.17.0.0/16")
    xnu.other_program(pfroute.RTM_ADD, "172.18.0.0/16", interface_index=UTUN_INDEX, flags=0x803)  # no RTF_PROTO1
    assert await delete_route(manager, net("172.17.0.0/16")) is False
    assert await delete_route(manager, net("172.18.0.0/16")) is False
    assert xnu.sent == []
    await add_route(manager, net("172.19.0.0/16"))
    assert await delete_route(manager, net("172.19.0.0/16")) is True
    assert net("172.19.0.0/16") not in xnu.table


async def test_derived_and_scoped_entries_are_not_listed(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    for flags in (pfroute.RTF_WASCLONED, pfroute.RTF_LOCAL, pfroute.RTF_IFSCOPE | 0x803):
        route = pfroute.RouteSocketMessage(pfroute.RTM_GET, net(f"10.{flags % 250}.0.0/16"), flags, 4)
        xnu.table[route.destination] = route  # type: ignore[index]
    xnu.other_program(pfroute.RTM_ADD, "192.168.1.0/24")
    routes = await manager.list_routes()
    assert [(route.destination, route.ours) for route in routes] == [(net("192.168.1.0/24"), False)]


async def test_os_errors_become_route_errors(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    xnu.dump_error = OSError(errno.EPERM, "Operation not permitted")
    with pytest.raises(RouteOperationError, match="dump routes failed") as raised:
        await manager.list_routes()
    assert raised.value.errno == errno.EPERM


async def test_monitor_reports_who_changed_what(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    async with manager.monitor() as events:
        await add_route(manager, net("172.17.0.0/16"))
        xnu.other_program(pfroute.RTM_DELETE, "172.17.0.0/16")
        mine = await events.__anext__()
        theirs = await events.__anext__()
    assert (mine.kind, mine.caused_by_us) == (RouteEventKind.ADDED, True)
    assert theirs.kind is RouteEventKind.REMOVED
    assert theirs.sender_pid == OTHER_PID
    assert not theirs.caused_by_us
    assert theirs.route == InstalledRoute(net("172.17.0.0/16"), theirs.route.interface, UTUN_INDEX, ours=True)  # type: ignore[union-attr]


async def test_monitor_overflow_asks_for_a_resync(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    async with manager.monitor() as events:
        xnu.monitors[0].send.send_nowait(OSError(errno.ENOBUFS, "No buffer space available"))
        event = await events.__anext__()
    assert event.kind is RouteEventKind.RESYNC_NEEDED


async def test_monitor_asks_for_a_resync_periodically_because_xnu_drops_silently(
    xnu: FakeXnu, manager: DarwinRouteManager, autojump_clock: trio.testing.MockClock
) -> None:
    """xnu's raw_input drops a message that does not fit the socket buffer without any error: only a periodic
    resync repairs what was lost. A steady stream of other messages must not postpone it."""
    started = trio.current_time()
    resyncs: list[float] = []
    async with manager.monitor() as events, trio.open_nursery() as nursery:

        async def busy_neighbour() -> None:
            while True:
                await trio.sleep(1)
                xnu.other_program(pfroute.RTM_ADD, "192.0.2.0/24")
                xnu.other_program(pfroute.RTM_DELETE, "192.0.2.0/24")

        nursery.start_soon(busy_neighbour)
        with trio.fail_after(3 * MONITOR_RESYNC_INTERVAL_S):
            async for event in events:
                if event.kind is RouteEventKind.RESYNC_NEEDED:
                    resyncs.append(trio.current_time() - started)
                    if len(resyncs) == 2:
                        break
        nursery.cancel_scope.cancel()
    assert 15 <= MONITOR_RESYNC_INTERVAL_S <= 30
    assert resyncs[0] == pytest.approx(MONITOR_RESYNC_INTERVAL_S, abs=1)
    assert resyncs[1] - resyncs[0] == pytest.approx(MONITOR_RESYNC_INTERVAL_S, abs=1)


class RecordingSocket(socket.socket):
    def __init__(self) -> None:
        super().__init__(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.options: list[tuple[int, int, int | bytes]] = []

    def setsockopt(self, level: int, option: int, value: int | bytes, *rest: None) -> None:  # type: ignore[override]
        self.options.append((level, option, value))
        super().setsockopt(level, option, value)


def test_the_monitor_socket_asks_for_a_receive_buffer_far_above_xnus_8_kib() -> None:
    made: list[RecordingSocket] = []

    def make_socket() -> socket.socket:
        made.append(RecordingSocket())
        return made[0]

    source = open_monitor_socket(make_socket)
    try:
        assert (socket.SOL_SOCKET, socket.SO_RCVBUF, MONITOR_SOCKET_BUFFER_BYTES) in made[0].options
        assert MONITOR_SOCKET_BUFFER_BYTES >= 1 << 20  # about 40 route messages fill xnu's default RAWRCVQ of 8 KiB
    finally:
        source.close()


async def test_reconciler_on_macos_restores_a_route_deleted_by_another_process(
    xnu: FakeXnu, manager: DarwinRouteManager, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    reconciler = RouteReconciler(manager, PolicyConfig())
    await nursery.start(reconciler.run)
    reconciler.set_networks([NetworkInfo("app", "id-app", "bridge", "local", False, {}, (net("172.17.0.0/16"),))])
    await reconciler.settled()
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.reconcile"):
        xnu.other_program(pfroute.RTM_DELETE, "172.17.0.0/16")
        await trio.testing.wait_all_tasks_blocked()
        await reconciler.settled()
    assert xnu.table[net("172.17.0.0/16")].interface_index == UTUN_INDEX
    assert any(f"deleted by pid {OTHER_PID}" in record.message for record in caplog.records)


async def test_monitor_reports_changes_of_our_interface_only(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    async with manager.monitor() as events:
        for index in (4, UTUN_INDEX):
            header = pfroute.IF_MSGHDR.pack(112, 5, pfroute.RTM_IFINFO, 0, 0, index)
            xnu.monitors[0].send.send_nowait(header + bytes(112 - len(header)))
        event = await events.__anext__()
    assert event.kind is RouteEventKind.INTERFACE_CHANGED
    assert xnu.monitors[0].receive_channel.statistics().current_buffer_used == 0


async def test_malformed_kernel_messages_are_counted_and_skipped(
    xnu: FakeXnu, manager: DarwinRouteManager, nursery: trio.Nursery
) -> None:
    reconciler = RouteReconciler(manager, PolicyConfig())
    await nursery.start(reconciler.run)
    good = pfroute.RouteSocketMessage(pfroute.RTM_DELETE, net("10.1.0.0/16"), 0x803, 4, gateway_interface=4)
    async with manager.monitor() as events:
        xnu.monitors[-1].send.send_nowait(b"\x05\x00\x05\x01garbage")
        xnu.monitors[-1].send.send_nowait(pfroute.encode_route_message(good))
        event = await events.__anext__()
    assert event.route is not None
    assert event.route.destination == net("10.1.0.0/16")
    assert manager.dropped_messages == {"malformed": 1}
    assert reconciler.status().dropped_messages == {"malformed": 1}


async def test_batch_add_sends_one_message_per_destination_and_reports_each_result(
    xnu: FakeXnu, manager: DarwinRouteManager
) -> None:
    xnu.other_program(pfroute.RTM_ADD, "172.17.0.0/16")
    xnu.refuse[net("fd00:d0c::/64")] = errno.ENETUNREACH
    destinations = [net("172.16.0.0/16"), net("172.17.0.0/16"), net("fd00:d0c::/64"), net("172.18.0.0/16")]
    results = await manager.add_many(destinations)
    assert [result.destination for result in results] == destinations
    assert [result.changed for result in results] == [True, False, False, True]
    assert results[0].error is None
    assert isinstance(results[1].error, RouteExistsError)
    assert isinstance(results[2].error, RouteOperationError)
    assert results[2].error.errno == errno.ENETUNREACH
    assert str(results[2].error).startswith("add route fd00:d0c::/64 failed")
    assert results[3].error is None
    assert [message.message_type for message in xnu.sent] == [pfroute.RTM_ADD] * 4
    assert {route.destination for route in await manager.list_ours()} == {net("172.16.0.0/16"), net("172.18.0.0/16")}


async def test_batch_replace_takes_over_each_existing_route(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    xnu.other_program(pfroute.RTM_ADD, "172.17.0.0/16")
    results = await manager.add_many([net("172.16.0.0/16"), net("172.17.0.0/16")], replace=True)
    assert [(result.error, result.changed) for result in results] == [(None, True), (None, True)]
    assert [message.message_type for message in xnu.sent] == [
        pfroute.RTM_ADD,
        pfroute.RTM_ADD,
        pfroute.RTM_DELETE,
        pfroute.RTM_ADD,
    ]
    assert {route.destination for route in await manager.list_ours()} == {net("172.16.0.0/16"), net("172.17.0.0/16")}


async def test_batch_delete_removes_ours_skips_others_and_reports_a_refusal_alone(
    xnu: FakeXnu, manager: DarwinRouteManager
) -> None:
    for destination in ("172.16.0.0/16", "172.18.0.0/16", "172.19.0.0/16"):
        await add_route(manager, net(destination))
    xnu.other_program(pfroute.RTM_ADD, "172.17.0.0/16")
    xnu.refuse[net("172.18.0.0/16")] = errno.EPERM
    xnu.sent.clear()
    destinations = [net(d) for d in ("172.16.0.0/16", "172.17.0.0/16", "172.18.0.0/16", "172.19.0.0/16", "10.0.0.0/8")]
    results = await manager.delete_many(destinations)
    assert [result.destination for result in results] == destinations
    assert [result.changed for result in results] == [True, False, False, True, False]
    assert [result.error is None for result in results] == [True, True, False, True, True]
    assert isinstance(results[2].error, RouteOperationError)
    assert results[2].error.errno == errno.EPERM
    # Another program's route and an absent one are never sent a delete.
    assert [message.destination for message in xnu.sent] == [
        net("172.16.0.0/16"),
        net("172.18.0.0/16"),
        net("172.19.0.0/16"),
    ]
    assert set(xnu.table) == {net("172.17.0.0/16"), net("172.18.0.0/16")}


async def test_reconciler_on_macos_installs_the_rest_when_one_route_is_refused(
    xnu: FakeXnu, manager: DarwinRouteManager, nursery: trio.Nursery
) -> None:
    xnu.refuse[net("172.18.0.0/16")] = errno.ENETDOWN
    reconciler = RouteReconciler(manager, PolicyConfig())
    await nursery.start(reconciler.run)
    subnets = (net("172.17.0.0/16"), net("172.18.0.0/16"), net("172.19.0.0/16"))
    reconciler.set_networks([NetworkInfo("app", "id-app", "bridge", "local", False, {}, subnets)])
    await reconciler.settled()
    assert set(xnu.table) == {net("172.17.0.0/16"), net("172.19.0.0/16")}
    [refused] = [subnet for subnet in reconciler.status().subnets if not subnet.installed]
    assert refused.subnet == net("172.18.0.0/16")
    assert refused.reason == f"could not install: {os.strerror(errno.ENETDOWN)} (errno {errno.ENETDOWN})"


async def test_scoped_routes_of_other_interfaces_are_no_overlaps(
    xnu: FakeXnu, manager: DarwinRouteManager, nursery: trio.Nursery
) -> None:
    # macOS keeps an interface-scoped (RTF_IFSCOPE) copy of routes for sockets bound to an interface, e.g. a
    # Wi-Fi's 172.20.0.0/16 on en0 while a VPN is primary: such a route decides nothing for unbound traffic.
    scoped = pfroute.RouteSocketMessage(pfroute.RTM_GET, net("172.20.0.0/16"), pfroute.RTF_IFSCOPE | 0x803, 4)
    xnu.table[net("172.20.0.0/16")] = scoped
    reconciler = RouteReconciler(manager, PolicyConfig())
    await nursery.start(reconciler.run)
    reconciler.set_networks([NetworkInfo("app", "id-app", "bridge", "local", False, {}, (net("172.20.5.0/24"),))])
    await reconciler.settled()
    status = reconciler.status()
    assert status.routed == {net("172.20.5.0/24")}
    assert status.overlaps == ()
    assert xnu.table[net("172.20.5.0/24")].interface_index == UTUN_INDEX


async def test_the_kernel_answers_through_our_utun_so_nothing_is_shadowed(
    xnu: FakeXnu, manager: DarwinRouteManager
) -> None:
    await add_route(manager, net("172.30.5.0/24"))
    answer = await manager.lookup(ipaddress.ip_address("172.30.5.1"))
    assert answer is not None
    assert (answer.interface_index, answer.interface_name) == (UTUN_INDEX, "utun20")
    assert await manager.shadow_of(net("172.30.5.0/24")) is None
    assert xnu.lookup_sockets_open == 0


async def test_a_route_the_overlap_rules_do_not_list_shadows_ours_and_status_says_so(
    xnu: FakeXnu, manager: DarwinRouteManager, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    # A host route another tunnel left behind (a clone: derived, so not listed as an overlap) wins for the probe
    # address: only the kernel's own answer shows it.
    reconciler = RouteReconciler(manager, PolicyConfig())
    await nursery.start(reconciler.run)
    leftover = pfroute.RouteSocketMessage(
        pfroute.RTM_GET, net("172.30.5.1/32"), 0x803 | pfroute.RTF_HOST | pfroute.RTF_WASCLONED, 3, 3
    )
    xnu.table[net("172.30.5.1/32")] = leftover
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.reconcile"):
        reconciler.set_networks([NetworkInfo("app", "id-app", "bridge", "local", False, {}, (net("172.30.5.0/24"),))])
        await reconciler.settled()
    assert xnu.table[net("172.30.5.0/24")].interface_index == UTUN_INDEX
    [subnet] = reconciler.status().subnets
    assert subnet.decision == "shadowed"
    assert subnet.reason is not None
    assert subnet.reason.startswith("shadowed by 172.30.5.1/32 via utun3; `route -n get 172.30.5.1` shows the route")
    assert "ip rule" not in subnet.reason
    assert any("is not used: shadowed by 172.30.5.1/32 via utun3" in record.message for record in caplog.records)

    del xnu.table[net("172.30.5.1/32")]
    reconciler.trigger()
    await reconciler.settled()
    [subnet] = reconciler.status().subnets
    assert subnet.decision == "routed"


async def test_an_ip_gateway_is_named_in_the_shadow(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    xnu.table[net("172.30.5.0/25")] = pfroute.RouteSocketMessage(
        pfroute.RTM_GET, net("172.30.5.0/25"), 0x803, 4, gateway=ipaddress.ip_address("192.168.1.1")
    )
    shadow = await manager.shadow_of(net("172.30.5.0/24"))
    assert shadow is not None
    assert shadow.describe() == "shadowed by 172.30.5.0/25 via en0 (gateway 192.168.1.1)"


async def test_no_route_at_all_is_no_answer(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    assert await manager.lookup(ipaddress.ip_address("fd77:5::1")) is None
    assert await manager.shadow_of(net("fd77:5::/64")) is None
    assert xnu.lookup_sockets_open == 0


async def test_a_reply_that_never_comes_is_no_answer_after_the_lookup_timeout(
    xnu: FakeXnu, manager: DarwinRouteManager, autojump_clock: trio.testing.MockClock
) -> None:
    await add_route(manager, net("172.30.5.0/24"))
    xnu.silent_lookups = True
    start = trio.current_time()
    assert await manager.lookup(ipaddress.ip_address("172.30.5.1")) is None
    assert trio.current_time() - start == pytest.approx(LOOKUP_TIMEOUT_S)
    assert xnu.lookup_sockets_open == 0


async def test_each_lookup_uses_a_sequence_number_of_its_own(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    await add_route(manager, net("172.30.5.0/24"))
    for _ in range(2):
        await manager.lookup(ipaddress.ip_address("172.30.5.1"))
    seqs = [pfroute.RT_MSGHDR.unpack_from(request)[7] for request in xnu.lookups]
    assert len(set(seqs)) == 2


async def test_our_own_direct_path_route_is_not_a_shadow(xnu: FakeXnu, manager: DarwinRouteManager) -> None:
    # On the direct path dmnc's route goes via the VM's address on bridge100, and xnu's RTM_GET names that
    # interface in rtm_index (bsd/net/rtsock.c, the `report:` path with RTA_IFP asked for): it is dmnc's route
    # all the same, not one that shadows it.
    bridge_index, gateway = 9, ipaddress.ip_address("192.168.64.2")
    xnu.interface_names[bridge_index] = "bridge100"
    manager.set_next_hop(4, NextHop(gateway, "bridge100"))
    await add_route(manager, net("172.30.5.0/24"))
    installed = xnu.table[net("172.30.5.0/24")]
    assert installed.gateway == gateway
    xnu.table[net("172.30.5.0/24")] = pfroute.RouteSocketMessage(
        pfroute.RTM_GET, installed.destination, installed.flags, bridge_index, gateway=gateway
    )
    assert await manager.shadow_of(net("172.30.5.0/24")) is None
    # Another program's route via the same interface still shadows ours.
    xnu.table[net("172.30.5.0/25")] = pfroute.RouteSocketMessage(
        pfroute.RTM_GET, net("172.30.5.0/25"), 0x803, bridge_index, gateway=ipaddress.ip_address("192.168.64.7")
    )
    assert await manager.shadow_of(net("172.30.5.0/24")) is not None


async def test_another_dmnc_processes_interface_route_is_not_ours_and_stays(
    xnu: FakeXnu, manager: DarwinRouteManager, nursery: trio.Nursery
) -> None:
    # `dmnc wg up` on macOS adds its interface routes the same way, RTF_PROTO1 through its own utun (commands/wg.py,
    # interface_routes): the mark names dmnc, not this service, so such a route is neither listed as ours nor
    # removed by this service's reconciler.
    wg_up = pfroute.RouteSocketMessage(
        pfroute.RTM_GET, net("10.99.0.0/24"), pfroute.DMNC_ROUTE_FLAGS, 3, gateway_interface=3
    )
    xnu.table[net("10.99.0.0/24")] = wg_up
    assert [route.destination for route in await manager.list_ours()] == []
    reconciler = RouteReconciler(manager, PolicyConfig())
    await nursery.start(reconciler.run)
    reconciler.set_networks([NetworkInfo("app", "id-app", "bridge", "local", False, {}, (net("172.30.5.0/24"),))])
    await reconciler.settled()
    assert xnu.table[net("10.99.0.0/24")] == wg_up
    assert [route.destination for route in await manager.list_ours()] == [net("172.30.5.0/24")]
    # dmnc's own direct-path route goes via a gateway on another interface and is ours all the same.
    manager.set_next_hop(4, NextHop(ipaddress.ip_address("192.168.64.2"), "bridge100"))
    reconciler.trigger()
    await reconciler.settled()
    [ours] = await manager.list_ours()
    assert ours.gateway == ipaddress.ip_address("192.168.64.2")
