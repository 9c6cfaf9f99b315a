"""What every route manager offers, and the values that cross its boundary.

A manager is bound to one interface (the tunnel). It adds and deletes routes marked as dmnc's own, through that
interface or, per address family, via a next hop on a link the host shares with the VM (the direct path,
`NextHop`), in batches with one result per destination (one refused route does not hold up the others), lists
routes (its own and everybody else's, for overlap checks), and reports changes to the routing table as they
happen so the reconciler can put back what another program took away.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Destination = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class InstalledRoute:
    """One route in the main routing table, as the OS reports it."""

    destination: Destination
    interface: str  # name, or "if#N" when the index no longer resolves
    interface_index: int
    # Carries dmnc's mark (Linux: its protocol number; macOS: RTF_PROTO1): a direct-path route goes via a gateway on
    # another interface and is dmnc's all the same. macOS also asks an interface route to go through the manager's
    # utun, as `dmnc wg up` marks its own utun's routes with RTF_PROTO1 too.
    ours: bool
    gateway: Address | None = None

    def describe(self) -> str:
        via = f" via {self.gateway}" if self.gateway is not None else ""
        return f"{self.destination}{via} dev {self.interface}"


@dataclass(frozen=True, slots=True)
class NextHop:
    """Where dmnc's routes of one address family go instead of the tunnel: the VM's address on a link the host
    shares with it (a gateway route, `ip route add SUBNET via GATEWAY`)."""

    gateway: Address
    interface: str  # the host's interface on that link, for status and log lines

    def describe(self) -> str:
        return f"via {self.gateway} dev {self.interface}"


class NextHopTable:
    """The next hop of each address family, for route managers to inherit (`RouteManager.next_hop`)."""

    def __init__(self) -> None:
        self._next_hops: dict[int, NextHop] = {}  # by IP version; none: through the tunnel interface

    def next_hop(self, version: int) -> NextHop | None:
        return self._next_hops.get(version)

    def set_next_hop(self, version: int, next_hop: NextHop | None) -> None:
        if next_hop is None:
            self._next_hops.pop(version, None)
        else:
            self._next_hops[version] = next_hop


def route_in_place(route: InstalledRoute, tunnel_interface: str, next_hop: NextHop | None) -> bool:
    """Whether one of dmnc's installed routes already goes where the manager now sends its family: via the next
    hop's gateway, or (without one) straight through the tunnel interface."""
    if next_hop is None:
        return route.gateway is None and route.interface == tunnel_interface
    return route.gateway == next_hop.gateway


class RouteEventKind(enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    RESYNC_NEEDED = "resync-needed"  # the OS dropped notifications (buffer overrun): re-read the table
    # The manager's interface went down, came up or changed: Linux flushes IPv4 routes of a downed interface
    # without one notification per route, so this is the only sign that ours are gone.
    INTERFACE_CHANGED = "interface-changed"
    # A policy routing rule, or a route outside the main table, changed: the kernel may now send a subnet dmnc
    # routes elsewhere (see ShadowCheck).
    POLICY_CHANGED = "policy-changed"


@dataclass(frozen=True, slots=True)
class RouteEvent:
    """A change seen by the monitor. `sender_pid` is the process that caused it when the OS says so."""

    kind: RouteEventKind
    route: InstalledRoute | None
    sender_pid: int | None = None
    caused_by_us: bool = False


@dataclass(frozen=True, slots=True)
class Shadow:
    """The kernel's own answer for an address inside a subnet dmnc routes, when it is not dmnc's route. Linux: a
    policy rule sends it to another table, where another route wins (Tailscale's exit node: rule 5270 -> table 52,
    holding a default route). macOS has one table: another route wins there (`table` None), such as a host route
    another tunnel left behind."""

    rule_priority: int | None  # None when no rule naming the table was found (it changed meanwhile)
    table: int | None  # None: the only table there is (macOS)
    route: str  # the route the kernel picked, as `describe()` shows routes

    def describe(self) -> str:
        if self.table is None:
            return f"shadowed by {self.route}"
        rule = f"rule {self.rule_priority}" if self.rule_priority is not None else "a rule"
        return f"shadowed by {rule} -> table {self.table} ({self.route})"


class RouteError(Exception):
    """Base of every error a route manager raises."""


class RouteExistsError(RouteError):
    """A route to the same destination (same metric) exists already and was not replaced."""

    def __init__(self, destination: Destination) -> None:
        super().__init__(f"a route to {destination} exists already")
        self.destination = destination


class RouteOperationError(RouteError):
    """The OS refused a route operation."""

    def __init__(self, operation: str, destination: Destination | None, errno: int, reason: str) -> None:
        target = f" {destination}" if destination is not None else ""
        super().__init__(f"{operation}{target} failed: {reason} (errno {errno})")
        self.operation = operation
        self.destination = destination
        self.errno = errno
        self.reason = reason


class InterfaceNotFoundError(RouteError):
    def __init__(self, interface: str) -> None:
        super().__init__(f"no network interface named {interface!r}")
        self.interface = interface


@dataclass(frozen=True, slots=True)
class RouteResult:
    """What one destination of a batch call came to: done, or the error for that destination alone."""

    destination: Destination
    error: RouteError | None = None
    changed: bool = True  # False: a delete found no route of ours to remove (which is not a failure)

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


class RouteManager(Protocol):
    """Routes through one interface (or a family's next hop), marked as dmnc's own so no other route is touched."""

    @property
    def interface(self) -> str: ...

    def next_hop(self, version: int) -> NextHop | None:
        """Where routes of IP `version` go now: None for the tunnel interface."""
        ...

    def set_next_hop(self, version: int, next_hop: NextHop | None) -> None:
        """Send routes of IP `version` added from now on via `next_hop` (None: through the tunnel interface).
        Installed routes stay as they are until added again with `replace` (the reconciler does that)."""
        ...

    @property
    def dropped_messages(self) -> Mapping[str, int]:
        """Malformed messages from the kernel, dropped (each with a log line), by reason."""
        ...

    async def add_many(self, destinations: Sequence[Destination], *, replace: bool = False) -> list[RouteResult]:
        """Route each destination through the interface, or via its family's next hop; one result per destination,
        in order. With `replace`, take over an existing route to the same destination (used to restore a route another
        program redirected, and to move dmnc's own to a new path); otherwise that destination's result is a
        RouteExistsError. Raises RouteError only when the whole batch failed (the socket itself)."""
        ...

    async def delete_many(self, destinations: Sequence[Destination]) -> list[RouteResult]:
        """Remove dmnc's route to each destination; one result per destination, in order, `changed` False where
        there was none. Never removes another route. Raises RouteError only when the whole batch failed."""
        ...

    async def list_routes(self) -> list[InstalledRoute]:
        """Every unicast route of the main table, IPv4 and IPv6, ours marked by `ours`."""
        ...

    async def list_ours(self) -> list[InstalledRoute]:
        """The routes dmnc installed through this interface."""
        ...

    def monitor(self) -> AbstractAsyncContextManager[AsyncIterator[RouteEvent]]:
        """Subscribe to routing table changes; subscribed as soon as the context is entered."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ShadowCheck(Protocol):
    """A manager that can ask the kernel which route it really uses (Linux: RTM_GETROUTE, as `ip route get`; macOS:
    RTM_GET, as `route -n get`)."""

    async def shadow_of(self, destination: Destination) -> Shadow | None:
        """How a policy rule sends `destination` past dmnc's route, or None when the kernel uses dmnc's interface
        (or answers nothing, or the main table decides: that is the overlap rules' business)."""
        ...


def probe_address(destination: Destination) -> Address:
    """An address inside `destination` to ask the kernel about: the first after the network address (Docker's
    gateway), or the only one of a host route."""
    if destination.num_addresses == 1:
        return destination.network_address
    return destination.network_address + 1


async def add_route(manager: RouteManager, destination: Destination, *, replace: bool = False) -> None:
    """One route through `manager.add_many`; raises its error (RouteExistsError, RouteOperationError)."""
    [result] = await manager.add_many([destination], replace=replace)
    result.raise_error()


async def delete_route(manager: RouteManager, destination: Destination) -> bool:
    """One route through `manager.delete_many`: False when there was none of ours; raises its error."""
    [result] = await manager.delete_many([destination])
    result.raise_error()
    return result.changed
