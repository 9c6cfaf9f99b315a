"""An in-memory route manager for tests of the layers above, with hooks to play "another program"."""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from dmnc.routes.manager import (
    Address,
    Destination,
    InstalledRoute,
    NextHopTable,
    RouteEvent,
    RouteEventKind,
    RouteExistsError,
    RouteOperationError,
    RouteResult,
)

# The fake's own "pid" in events it causes, like the netlink port of dmnc's request socket.
OWN_SENDER_PID = 1
MONITOR_BUFFER = 1024


@dataclass(frozen=True, slots=True)
class Operation:
    """One call that changed the fake's table, recorded so tests can assert minimal changes."""

    action: str  # "add", "replace" or "delete"
    destination: Destination


class FakeRouteManager(NextHopTable):
    """A routing table in memory. One route per destination, like a kernel table with a single metric."""

    def __init__(self, interface: str = "utun7", interface_index: int = 7) -> None:
        super().__init__()
        self._interface = interface
        self._interface_index = interface_index
        self._routes: dict[Destination, InstalledRoute] = {}
        self._subscribers: list[trio.MemorySendChannel[RouteEvent | RouteOperationError]] = []
        self.subscriptions = 0  # monitors opened so far
        self.operations: list[Operation] = []
        self.refuse: dict[Destination, int] = {}  # destination -> errno its add or delete fails with
        self.unreachable_gateways: set[Address] = set()  # adds via these fail with ENETUNREACH, as a gone link's
        self.batches: list[tuple[str, tuple[Destination, ...]]] = []  # ("add"/"replace"/"delete", destinations)
        self.closed = False
        self.dropped: Counter[str] = Counter()  # tests may count drops here, as a kernel-facing manager would

    @property
    def interface(self) -> str:
        return self._interface

    @property
    def dropped_messages(self) -> Mapping[str, int]:
        return self.dropped

    def _publish(self, event: RouteEvent) -> None:
        for channel in self._subscribers:
            channel.send_nowait(event)

    async def add_many(self, destinations: Sequence[Destination], *, replace: bool = False) -> list[RouteResult]:
        await trio.lowlevel.checkpoint()
        self.batches.append(("replace" if replace else "add", tuple(destinations)))
        return [self._add(destination, replace=replace) for destination in destinations]

    def _add(self, destination: Destination, *, replace: bool) -> RouteResult:
        if destination in self.refuse:
            error = RouteOperationError("add route", destination, self.refuse[destination], "refused by the test")
            return RouteResult(destination, error, changed=False)
        hop = self.next_hop(destination.version)
        if hop is not None and hop.gateway in self.unreachable_gateways:
            error = RouteOperationError("add route", destination, errno.ENETUNREACH, "Network is unreachable")
            return RouteResult(destination, error, changed=False)
        if destination in self._routes and not replace:
            return RouteResult(destination, RouteExistsError(destination), changed=False)
        next_hop = self._next_hops.get(destination.version)
        if next_hop is None:
            route = InstalledRoute(destination, self._interface, self._interface_index, ours=True)
        else:
            route = InstalledRoute(destination, next_hop.interface, 0, ours=True, gateway=next_hop.gateway)
        self._routes[destination] = route
        self.operations.append(Operation("replace" if replace else "add", destination))
        self._publish(RouteEvent(RouteEventKind.ADDED, route, OWN_SENDER_PID, caused_by_us=True))
        return RouteResult(destination)

    async def delete_many(self, destinations: Sequence[Destination]) -> list[RouteResult]:
        await trio.lowlevel.checkpoint()
        self.batches.append(("delete", tuple(destinations)))
        return [self._delete(destination) for destination in destinations]

    def _delete(self, destination: Destination) -> RouteResult:
        if destination in self.refuse:
            error = RouteOperationError("delete route", destination, self.refuse[destination], "refused by the test")
            return RouteResult(destination, error, changed=False)
        route = self._routes.get(destination)
        if route is None or not route.ours:
            return RouteResult(destination, changed=False)
        del self._routes[destination]
        self.operations.append(Operation("delete", destination))
        self._publish(RouteEvent(RouteEventKind.REMOVED, route, OWN_SENDER_PID, caused_by_us=True))
        return RouteResult(destination)

    async def list_routes(self) -> list[InstalledRoute]:
        await trio.lowlevel.checkpoint()
        return list(self._routes.values())

    async def list_ours(self) -> list[InstalledRoute]:
        return [route for route in await self.list_routes() if route.ours]

    @asynccontextmanager
    async def monitor(self) -> AsyncIterator[AsyncIterator[RouteEvent]]:
        send, receive = trio.open_memory_channel[RouteEvent | RouteOperationError](MONITOR_BUFFER)
        self._subscribers.append(send)
        self.subscriptions += 1
        try:
            yield _FakeEventStream(receive)
        finally:
            self._subscribers.remove(send)
            send.close()

    async def aclose(self) -> None:
        self.closed = True

    # Another program's actions (a VPN client, an administrator with `ip route`).

    def install_other(
        self,
        destination: Destination,
        interface: str = "en0",
        interface_index: int = 4,
        gateway: Address | None = None,
        sender_pid: int = 4242,
    ) -> InstalledRoute:
        """Install a route dmnc does not own, replacing whatever went to the same destination."""
        route = InstalledRoute(destination, interface, interface_index, ours=False, gateway=gateway)
        self._routes[destination] = route
        self._publish(RouteEvent(RouteEventKind.ADDED, route, sender_pid))
        return route

    def remove_other(self, destination: Destination, sender_pid: int = 4242) -> None:
        """Delete the route to `destination`, whoever owns it."""
        route = self._routes.pop(destination)
        self._publish(RouteEvent(RouteEventKind.REMOVED, route, sender_pid))

    def gateway_gone(self, gateway: Address) -> None:
        """The link of `gateway` went away: the kernel drops every route through it and says so per route."""
        for destination in [d for d, route in self._routes.items() if route.gateway == gateway]:
            route = self._routes.pop(destination)
            self._publish(RouteEvent(RouteEventKind.REMOVED, route, None))

    def interface_down(self) -> None:
        """The interface goes down: the kernel drops our routes and says only that the interface changed."""
        for destination in [d for d, route in self._routes.items() if route.ours]:
            del self._routes[destination]
        self._publish(RouteEvent(RouteEventKind.INTERFACE_CHANGED, None))

    def fail_monitors(self, errno: int) -> None:
        """Every open monitor fails with `errno`, as a broken routing socket would."""
        for channel in self._subscribers:
            channel.send_nowait(RouteOperationError("route monitor receive", None, errno, "failed by the test"))

    def overrun(self) -> None:
        """Lose notifications, as a kernel does when the monitor's buffer overflows."""
        self._publish(RouteEvent(RouteEventKind.RESYNC_NEEDED, None))


class _FakeEventStream:
    def __init__(self, receive: trio.MemoryReceiveChannel[RouteEvent | RouteOperationError]) -> None:
        self._receive = receive

    def __aiter__(self) -> _FakeEventStream:
        return self

    async def __anext__(self) -> RouteEvent:
        item = await self._receive.receive()
        if isinstance(item, RouteOperationError):
            raise item
        return item
