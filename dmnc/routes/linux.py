"""Linux route manager: rtnetlink over a non-blocking AF_NETLINK socket, driven by trio.

No subprocess per route: requests are netlink messages (see `rtnetlink.py`), sent in batches and acknowledged one
by one. dmnc's routes carry `rtm_protocol = RTPROT_DMNC` and go through the tunnel's interface index, or, on the
direct path, via the VM's address as RTA_GATEWAY. The protocol alone marks a route as dmnc's; deletes carry it, so
the kernel itself refuses to remove any route that is not ours.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import trio

from dmnc import netlink
from dmnc.routes import rtnetlink
from dmnc.routes.hoststate import host_networks_of
from dmnc.routes.manager import (
    Address,
    Destination,
    InstalledRoute,
    InterfaceNotFoundError,
    NextHopTable,
    RouteEvent,
    RouteEventKind,
    RouteExistsError,
    RouteOperationError,
    RouteResult,
    Shadow,
    probe_address,
)
from dmnc.routes.policy import HostNetwork

logger = logging.getLogger(__name__)

# Holds any datagram rtnetlink sends: dump datagrams grow to at most 32 KiB (af_netlink.c caps max_recvmsg_len).
RECEIVE_BUFFER_BYTES = 65536
# SO_RCVBUF of a monitor socket (the kernel caps it at net.core.rmem_max and doubles it for bookkeeping).
MONITOR_RECEIVE_BUFFER_BYTES = 1 << 20
# Requests sent before reading their acknowledgements; keeps the worst-case backlog of ACKs (36 B each with
# NETLINK_CAP_ACK) far below the socket's receive buffer, so the kernel never has to drop one.
REQUESTS_PER_BATCH = 64
# A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) is retried this many times before it is used as is.
DUMP_ATTEMPTS = 3
# include/linux/threads.h: the largest pid on 64-bit Linux.
PID_MAX_LIMIT = 4 * 1024 * 1024
# linux/rtnetlink.h: "this route is cloned" (IPv6 route cache entries in dumps).
RTM_F_CLONED = 0x200


Dumped = TypeVar("Dumped", rtnetlink.RouteMessage, rtnetlink.AddressMessage, rtnetlink.RuleMessage)


def _socket_error(operation: str, error: OSError) -> RouteOperationError:
    code = error.errno or 0
    return RouteOperationError(operation, None, code, os.strerror(code) if code else str(error))


class NetlinkSocket:
    """One AF_NETLINK/NETLINK_ROUTE socket, non-blocking, optionally subscribed to multicast groups."""

    def __init__(self, drops: Counter[str], groups: int = 0) -> None:
        self._drops = drops
        try:
            self._socket = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, netlink.NETLINK_ROUTE
            )
        except OSError as error:
            raise _socket_error("opening a netlink socket", error) from error
        try:
            self._socket.setsockopt(netlink.SOL_NETLINK, netlink.NETLINK_CAP_ACK, 1)
            if groups:
                # A subscriber must absorb bursts (a VPN installing hundreds of routes) without losing any: an
                # overrun costs a full resync.
                self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MONITOR_RECEIVE_BUFFER_BYTES)
            self._socket.bind((0, groups))
            self.port_id: int = self._socket.getsockname()[0]
        except OSError as error:
            self._socket.close()
            raise _socket_error("binding a netlink socket", error) from error

    def close(self) -> None:
        self._socket.close()

    async def send(self, data: bytes) -> None:
        while True:
            try:
                self._socket.send(data)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._socket)
            except OSError as error:
                raise _socket_error("netlink send", error) from error
            else:
                return

    async def receive(self) -> list[rtnetlink.NetlinkMessage]:
        """The messages of the next datagram. ENOBUFS (the kernel dropped messages for us) becomes an overrun."""
        while True:
            try:
                data = self._socket.recv(RECEIVE_BUFFER_BYTES)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._socket)
            except OSError as error:
                if error.errno == errno.ENOBUFS:
                    return [netlink.OverrunMessage(seq=0, port_id=0)]
                raise _socket_error("netlink receive", error) from error
            else:
                return rtnetlink.decode_messages_untrusted(data, self._drops)


@dataclass(frozen=True, slots=True)
class _Request:
    destination: Destination
    operation: str
    data: bytes
    seq: int


class LinuxRouteManager(NextHopTable):
    """RouteManager on rtnetlink for the interface named `interface`, bound to its index when created: a tunnel
    interface created anew needs a new manager."""

    def __init__(self, interface: str) -> None:
        super().__init__()
        try:
            self._interface_index = socket.if_nametoindex(interface)
        except OSError as error:
            raise InterfaceNotFoundError(interface) from error
        self._interface = interface
        self._dropped: Counter[str] = Counter()
        self._socket = NetlinkSocket(self._dropped)
        self._lock = trio.Lock()  # one transaction at a time: replies are matched to requests by order and seq
        self._next_seq = 1

    @property
    def interface(self) -> str:
        return self._interface

    @property
    def interface_index(self) -> int:
        return self._interface_index

    @property
    def dropped_messages(self) -> Mapping[str, int]:
        return self._dropped

    @property
    def request_port_id(self) -> int:
        """The netlink port of dmnc's requests: notifications carrying it are echoes of our own changes."""
        return self._socket.port_id

    async def aclose(self) -> None:
        self._socket.close()

    def _seq(self) -> int:
        seq = self._next_seq
        self._next_seq = self._next_seq % 0xFFFFFFFF + 1
        return seq

    def _route_request(self, kind: rtnetlink.RouteMessageKind, destination: Destination, flags: int) -> _Request:
        family = netlink.AF_INET if destination.version == 4 else netlink.AF_INET6
        next_hop = self._next_hops.get(destination.version)
        output_interface: int | None = self._interface_index
        gateway = None
        if kind is rtnetlink.RouteMessageKind.DELETE:
            # The protocol alone says the route is ours, whichever way it goes (tunnel or next hop); fib_table_delete
            # (net/ipv4/fib_trie.c) matches any scope only for RT_SCOPE_NOWHERE, as `ip route del` sends.
            scope, output_interface = rtnetlink.RT_SCOPE_NOWHERE, None
        elif next_hop is not None:
            scope, output_interface, gateway = netlink.RT_SCOPE_UNIVERSE, None, next_hop.gateway
        else:
            # iproute2 gives a device route without gateway link scope; IPv6 has no route scopes (always universe).
            scope = rtnetlink.RT_SCOPE_LINK if destination.version == 4 else netlink.RT_SCOPE_UNIVERSE
        seq = self._seq()
        message = rtnetlink.RouteMessage(
            kind=kind,
            family=family,
            destination=destination,
            flags=netlink.NLM_F_REQUEST | netlink.NLM_F_ACK | flags,
            seq=seq,
            protocol=rtnetlink.RTPROT_DMNC,
            scope=scope,
            output_interface=output_interface,
            gateway=gateway,
        )
        operation = "add route" if kind is rtnetlink.RouteMessageKind.NEW else "delete route"
        return _Request(destination, operation, rtnetlink.encode_route_message(message), seq)

    async def _transact(self, requests: Sequence[_Request]) -> dict[int, int]:
        """Send `requests` in batches; the errno (0 = success) of each, by seq: the kernel acknowledges every
        request (NLM_F_ACK) with an NLMSG_ERROR carrying the request's nlmsg_seq (netlink(7))."""
        results: dict[int, int] = {}
        async with self._lock:
            for start in range(0, len(requests), REQUESTS_PER_BATCH):
                batch = requests[start : start + REQUESTS_PER_BATCH]
                for request in batch:
                    await self._socket.send(request.data)
                pending = {request.seq for request in batch}
                while pending:
                    for message in await self._socket.receive():
                        if isinstance(message, netlink.ErrorMessage) and message.seq in pending:
                            pending.discard(message.seq)
                            results[message.seq] = -message.error
                        elif isinstance(message, netlink.OverrunMessage):
                            raise RouteOperationError("netlink request", None, errno.ENOBUFS, "replies were lost")
        return results

    async def add_many(self, destinations: Sequence[Destination], *, replace: bool = False) -> list[RouteResult]:
        """Add several routes in as few system calls as the kernel allows, one result per destination."""
        flags = netlink.NLM_F_CREATE | (netlink.NLM_F_REPLACE if replace else netlink.NLM_F_EXCL)
        requests = [self._route_request(rtnetlink.RouteMessageKind.NEW, d, flags) for d in destinations]
        results = await self._transact(requests)
        return [_add_result(request, results[request.seq]) for request in requests]

    async def delete_many(self, destinations: Sequence[Destination]) -> list[RouteResult]:
        """Delete several of our routes, one result per destination."""
        requests = [self._route_request(rtnetlink.RouteMessageKind.DELETE, d, 0) for d in destinations]
        results = await self._transact(requests)
        return [_delete_result(request, results[request.seq]) for request in requests]

    async def _dump(self, request: Callable[[int], bytes], kind: type[Dumped], what: str) -> list[Dumped]:
        """The `kind` messages of one dump; `request` encodes it for a sequence number."""
        async with self._lock:
            for attempt in range(1, DUMP_ATTEMPTS + 1):
                seq = self._seq()
                await self._socket.send(request(seq))
                entries: list[Dumped] = []
                interrupted = False
                done = False
                while not done:
                    for message in await self._socket.receive():
                        if message.seq != seq:
                            continue
                        if isinstance(message, kind):
                            entries.append(message)
                        if isinstance(message, rtnetlink.RouteMessage | netlink.DoneMessage):
                            interrupted |= bool(message.flags & netlink.NLM_F_DUMP_INTR)
                        done |= isinstance(message, netlink.DoneMessage)
                        if isinstance(message, netlink.ErrorMessage):
                            code = -message.error
                            raise RouteOperationError(what, None, code, os.strerror(code))
                if not interrupted or attempt == DUMP_ATTEMPTS:
                    return entries
                logger.debug("%s interrupted by a concurrent change; dumping again", what)
        raise AssertionError("unreachable: the last attempt returns")

    def installed_route(self, message: rtnetlink.RouteMessage) -> InstalledRoute | None:
        """The InstalledRoute a kernel route message describes, or None for what dmnc does not track (other
        tables, local/broadcast/multicast types, IPv6 cache clones)."""
        if (
            message.destination is None
            or message.table != rtnetlink.RT_TABLE_MAIN
            or message.route_type != rtnetlink.RTN_UNICAST
            or message.route_flags & RTM_F_CLONED
        ):
            return None
        index = message.output_interface or 0
        return InstalledRoute(
            destination=message.destination,
            interface=_interface_name(index),
            interface_index=index,
            ours=message.protocol == rtnetlink.RTPROT_DMNC,
            gateway=message.gateway,
        )

    async def list_routes(self) -> list[InstalledRoute]:
        dumped = await self._dump(rtnetlink.encode_dump_request, rtnetlink.RouteMessage, "dump routes")
        routes = (self.installed_route(message) for message in dumped)
        return [route for route in routes if route is not None]

    async def list_ours(self) -> list[InstalledRoute]:
        return [route for route in await self.list_routes() if route.ours]

    async def list_addresses(self) -> list[rtnetlink.AddressMessage]:
        """Every address of every interface (RTM_GETADDR dump)."""
        return await self._dump(rtnetlink.encode_address_dump_request, rtnetlink.AddressMessage, "dump addresses")

    async def host_networks(self) -> tuple[HostNetwork, ...]:
        """The addresses and connected subnets of every interface but the tunnel (HostAddressSource)."""
        entries = [
            (_interface_name(m.interface_index), m.local, m.address, m.prefix_length)
            for m in await self.list_addresses()
            if m.interface_index != self._interface_index
        ]
        return host_networks_of(entries, self._interface)

    async def list_rules(self, family: int) -> list[rtnetlink.RuleMessage]:
        """The policy routing rules of `family` (RTM_GETRULE dump)."""

        def request(seq: int) -> bytes:
            return rtnetlink.encode_rule_dump_request(seq, family)

        return await self._dump(request, rtnetlink.RuleMessage, "dump rules")

    async def shadow_of(self, destination: Destination) -> Shadow | None:
        """ShadowCheck: the kernel's route for an address in `destination`, when a rule sends it to another table.
        The rule is the one the kernel reports as looking that table up (the lowest priority if several do): dmnc
        does not evaluate rules itself."""
        answer = await self.lookup(probe_address(destination))
        if answer is None or answer.output_interface == self._interface_index:
            return None
        if answer.table in (rtnetlink.RT_TABLE_MAIN, rtnetlink.RT_TABLE_UNSPEC):
            return None
        family = netlink.AF_INET if destination.version == 4 else netlink.AF_INET6
        rules = [rule for rule in await self.list_rules(family) if rule.table == answer.table]
        rule = min((r.priority for r in rules if r.action == rtnetlink.FR_ACT_TO_TBL), default=None)
        route = InstalledRoute(
            destination=answer.destination or destination,
            interface=_interface_name(answer.output_interface or 0),
            interface_index=answer.output_interface or 0,
            ours=False,
            gateway=answer.gateway,
        )
        return Shadow(rule, answer.table, route.describe())

    async def lookup(self, address: Address) -> rtnetlink.RouteMessage | None:
        """The route the kernel uses for `address`, after every policy rule (RTM_GETROUTE, as `ip route get`), with
        the table it is in; None when the kernel has none (it answers ENETUNREACH and the like)."""
        async with self._lock:
            seq = self._seq()
            await self._socket.send(rtnetlink.encode_lookup_request(address, seq))
            while True:
                for message in await self._socket.receive():
                    if message.seq != seq:
                        continue
                    if isinstance(message, rtnetlink.RouteMessage):
                        return message
                    if isinstance(message, netlink.ErrorMessage):
                        return None

    @asynccontextmanager
    async def address_changes(self) -> AsyncIterator[AsyncIterator[None]]:
        """Subscribe to address changes (RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR): one item per datagram that
        added or removed an address, or after the kernel dropped notifications (re-read them all either way)."""
        groups = netlink.group_mask(rtnetlink.RTNLGRP_IPV4_IFADDR, rtnetlink.RTNLGRP_IPV6_IFADDR)
        subscription = NetlinkSocket(self._dropped, groups)
        try:
            yield _AddressChanges(subscription)
        finally:
            subscription.close()

    @asynccontextmanager
    async def monitor(self) -> AsyncIterator[AsyncIterator[RouteEvent]]:
        groups = netlink.group_mask(
            rtnetlink.RTNLGRP_LINK,
            rtnetlink.RTNLGRP_IPV4_ROUTE,
            rtnetlink.RTNLGRP_IPV6_ROUTE,
            rtnetlink.RTNLGRP_IPV4_RULE,
            rtnetlink.RTNLGRP_IPV6_RULE,
        )
        subscription = NetlinkSocket(self._dropped, groups)
        try:
            yield _RouteEventStream(self, subscription)
        finally:
            subscription.close()


class _RouteEventStream:
    """Route notifications as RouteEvents; an iterator class rather than an async generator, so leaving the
    monitor context never leaves a half-run generator for the garbage collector to finalize."""

    def __init__(self, manager: LinuxRouteManager, subscription: NetlinkSocket) -> None:
        self._manager = manager
        self._subscription = subscription
        self._ready: list[RouteEvent] = []

    def __aiter__(self) -> _RouteEventStream:
        return self

    async def __anext__(self) -> RouteEvent:
        while not self._ready:
            self._ready = [event for m in await self._subscription.receive() if (event := self._event(m))]
        return self._ready.pop(0)

    def _event(self, message: rtnetlink.NetlinkMessage) -> RouteEvent | None:
        if isinstance(message, netlink.OverrunMessage):
            return RouteEvent(RouteEventKind.RESYNC_NEEDED, None)
        if isinstance(message, rtnetlink.LinkMessage):
            if message.interface_index != self._manager.interface_index:
                return None
            return RouteEvent(RouteEventKind.INTERFACE_CHANGED, None, sender_pid=sender_pid(message.port_id))
        if isinstance(message, rtnetlink.RuleMessage) or _other_table_route(message):
            return RouteEvent(RouteEventKind.POLICY_CHANGED, None, sender_pid=sender_pid(message.port_id))
        route = self._manager.installed_route(message) if isinstance(message, rtnetlink.RouteMessage) else None
        if route is None or not isinstance(message, rtnetlink.RouteMessage):
            return None
        kind = RouteEventKind.ADDED if message.kind is rtnetlink.RouteMessageKind.NEW else RouteEventKind.REMOVED
        # nlmsg_pid of a notification is the netlink port of the request that caused it (0: the kernel itself);
        # a process's first netlink socket gets the process id as its port, which is what `ip` does.
        return RouteEvent(
            kind,
            route,
            sender_pid=sender_pid(message.port_id),
            caused_by_us=message.port_id == self._manager.request_port_id,
        )


def _other_table_route(message: rtnetlink.NetlinkMessage) -> bool:
    """A route of a table other than main and local (where a policy rule may send traffic)."""
    return (
        isinstance(message, rtnetlink.RouteMessage)
        and message.table not in (rtnetlink.RT_TABLE_MAIN, rtnetlink.RT_TABLE_LOCAL)
        and not message.route_flags & RTM_F_CLONED
    )


class _AddressChanges:
    """One item per datagram of address notifications; a class for the reason _RouteEventStream is one."""

    def __init__(self, subscription: NetlinkSocket) -> None:
        self._subscription = subscription

    def __aiter__(self) -> _AddressChanges:
        return self

    async def __anext__(self) -> None:
        while True:
            messages = await self._subscription.receive()
            if any(isinstance(m, rtnetlink.AddressMessage | netlink.OverrunMessage) for m in messages):
                return


def _add_result(request: _Request, code: int) -> RouteResult:
    if code == 0:
        return RouteResult(request.destination)
    if code == errno.EEXIST:
        return RouteResult(request.destination, RouteExistsError(request.destination), changed=False)
    error = RouteOperationError(request.operation, request.destination, code, os.strerror(code))
    return RouteResult(request.destination, error, changed=False)


def _delete_result(request: _Request, code: int) -> RouteResult:
    if code in (0, errno.ESRCH):  # ESRCH: no such route of ours, which is what a delete wants
        return RouteResult(request.destination, changed=code == 0)
    error = RouteOperationError(request.operation, request.destination, code, os.strerror(code))
    return RouteResult(request.destination, error, changed=False)


def sender_pid(port_id: int) -> int | None:
    """The process behind a notification's netlink port, when the port can be a pid: the kernel autobinds a
    process's first netlink socket to its pid and later ones to negative ids (af_netlink.c netlink_autobind);
    0 is the kernel itself."""
    return port_id if 0 < port_id <= PID_MAX_LIMIT else None


def _interface_name(index: int) -> str:
    if index == 0:
        return "(multipath)"
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if#{index}"
