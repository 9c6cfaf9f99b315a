"""macOS route manager on the routing socket (PF_ROUTE), same protocol as the Linux one.

Routes are what `route -n add -net SUBNET -interface utunN -proto1` installs: RTF_UP|RTF_STATIC|RTF_PROTO1, the
gateway an AF_LINK sockaddr naming the utun by index. On the direct path they are what `route -n add -net SUBNET
GATEWAY -proto1` installs instead: RTF_GATEWAY too, the gateway an AF_INET/AF_INET6 sockaddr (the VM's address on
bridge100). RTF_PROTO1 marks a route as dmnc's: a gateway route whichever way it goes, an interface route only
through this utun (`dmnc wg up` marks its own utun's routes the same way).
xnu's RTM_DELETE does not match on flags, so a delete first checks in a fresh table dump that the route is ours.
The table is read with sysctl(NET_RT_DUMP); changes are read from a second routing socket, where every message
carries the pid that caused it (rtm_pid).

The monitor can lose messages without being told: xnu gives a routing socket an 8 KiB receive buffer
(bsd/net/raw_cb.h RAWRCVQ), every other process's requests are echoed into it (bsd/net/rtsock.c route_output),
and raw_input drops what does not fit without setting an error (bsd/net/raw_usrreq.c: sbappendaddr's failure has
no else branch), so recv never reports ENOBUFS. The monitor socket therefore asks for a large buffer, and the
event stream asks for a resync every MONITOR_RESYNC_INTERVAL_S, which a lost message waits for at most.

After installing, the reconciler asks the kernel which route it really uses for an address in each subnet
(`shadow_of`: RTM_GET on a fresh routing socket, as `route -n get`): a route the overlap rules do not list, such
as a host route another tunnel left behind, is reported as shadowing dmnc's.

The OS calls sit behind `RoutingTransport`, so the manager's logic is tested on Linux against a fake kernel that
speaks the same bytes; the real transport is exercised by the macOS CI workflow.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import ipaddress
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import trio

from dmnc.logsetup import printable
from dmnc.routes import pfroute
from dmnc.routes.manager import (
    Address,
    Destination,
    InstalledRoute,
    InterfaceNotFoundError,
    NextHop,
    NextHopTable,
    RouteEvent,
    RouteEventKind,
    RouteExistsError,
    RouteOperationError,
    RouteResult,
    Shadow,
    probe_address,
)

# bsd/sys/sysctl.h and bsd/net/route.h: {CTL_NET, PF_ROUTE, 0, AF_UNSPEC, NET_RT_DUMP, 0} dumps every route.
CTL_NET = 4
NET_RT_DUMP = 1
# The table can grow between sizing the buffer and reading it (ENOMEM): size again, a few times.
DUMP_ATTEMPTS = 5
# One routing message per read; the largest route message is a header plus eight 255-byte sockaddrs.
RECEIVE_BUFFER_BYTES = 4096
# SO_RCVBUF of the monitor socket, instead of xnu's 8 KiB RAWRCVQ (bsd/net/raw_cb.h); sbreserve clamps it to
# kern.ipc.maxsockbuf (bsd/kern/uipc_socket2.c), 8 MiB by default.
MONITOR_SOCKET_BUFFER_BYTES = 1 << 20
# Overflow is silent on xnu (see the module docstring): the monitor asks for a full pass this often, whatever
# it received meanwhile. One pass is one sysctl dump.
MONITOR_RESYNC_INTERVAL_S = 20.0
# xnu answers an RTM_GET inside the write itself (bsd/net/rtsock.c route_output queues the reply before returning),
# so the reply is already waiting when send returns; this bounds only a reply that never comes.
LOOKUP_TIMEOUT_S = 2.0


class MessageSource(Protocol):
    async def receive(self) -> bytes:
        """The next routing socket message; raises OSError. (xnu never reports dropped messages with ENOBUFS,
        see the module docstring; the error is still honoured, as other BSDs report it.)"""
        ...

    def close(self) -> None: ...


class RoutingTransport(Protocol):
    """The three OS operations the manager needs."""

    async def send(self, message: bytes) -> None:
        """Write one message to a routing socket; the kernel's refusal arrives as OSError with its errno."""
        ...

    async def dump(self) -> bytes:
        """sysctl NET_RT_DUMP: the whole routing table as consecutive rt_msghdr messages."""
        ...

    def open_monitor(self) -> MessageSource:
        """A second routing socket that receives every routing message; raises OSError."""
        ...

    def open_lookup(self) -> LookupSocket:
        """A fresh routing socket for one RTM_GET and its reply; raises OSError."""
        ...

    def close(self) -> None: ...


class LookupSocket(MessageSource, Protocol):
    """A routing socket that is written to and read from: the reply to an RTM_GET comes back on it."""

    async def send(self, message: bytes) -> None:
        """Write one message; the kernel's refusal (ESRCH: no route at all) arrives as OSError."""
        ...


def _routing_socket() -> socket.socket:
    return socket.socket(pfroute.AF_ROUTE, socket.SOCK_RAW, pfroute.AF_UNSPEC)


class _RoutingSocket:
    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.socket.setblocking(False)

    async def receive(self) -> bytes:
        while True:
            try:
                return self.socket.recv(RECEIVE_BUFFER_BYTES)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.socket)

    async def send(self, message: bytes) -> None:
        while True:
            try:
                self.socket.send(message)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.socket)
            else:
                return

    def close(self) -> None:
        self.socket.close()


class DarwinRoutingTransport:
    """The real routing socket and sysctl (macOS only)."""

    def __init__(self) -> None:
        self._requests = _RoutingSocket(_routing_socket())
        # Requests never read replies (errors come back from write), so the socket must not queue the whole
        # system's routing messages for us.
        self._requests.socket.shutdown(socket.SHUT_RD)
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)

    async def send(self, message: bytes) -> None:
        await self._requests.send(message)

    async def dump(self) -> bytes:
        return await trio.to_thread.run_sync(self._dump_blocking)

    def _dump_blocking(self) -> bytes:
        mib = (CTL_NET, pfroute.AF_ROUTE, 0, pfroute.AF_UNSPEC, NET_RT_DUMP, 0)
        return read_sysctl(self._libc, mib, attempts=DUMP_ATTEMPTS, what="the routing table")

    def open_monitor(self) -> MessageSource:
        return open_monitor_socket(_routing_socket)

    def open_lookup(self) -> LookupSocket:
        # A fresh socket per lookup: it queues only what arrives after it opened, so the reply cannot be lost to a
        # buffer full of older messages (xnu drops silently on overflow, see the module docstring).
        return _RoutingSocket(_routing_socket())

    def close(self) -> None:
        self._requests.socket.close()


def read_sysctl(libc: ctypes.CDLL, mib: tuple[int, ...], *, attempts: int, what: str) -> bytes:
    """The bytes of a sysctl(3) that answers a growing table (`what`): sized first, read again if it grew meanwhile
    (ENOMEM), at most `attempts` times."""
    names = (ctypes.c_int * len(mib))(*mib)
    for _ in range(attempts):
        size = ctypes.c_size_t(0)
        if libc.sysctl(names, len(mib), None, ctypes.byref(size), None, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        buffer = ctypes.create_string_buffer(size.value)
        if libc.sysctl(names, len(mib), buffer, ctypes.byref(size), None, 0) == 0:
            return buffer.raw[: size.value]
        if ctypes.get_errno() != errno.ENOMEM:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    raise OSError(errno.ENOMEM, f"{what} kept growing while it was read")


def open_monitor_socket(make_socket: Callable[[], socket.socket]) -> MessageSource:
    """A routing socket for the monitor with a receive buffer large enough for a burst of route changes."""
    sock = make_socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MONITOR_SOCKET_BUFFER_BYTES)
    except OSError:
        sock.close()
        raise
    return _RoutingSocket(sock)


def _failure(operation: str, destination: Destination | None, error: OSError) -> RouteOperationError:
    code = error.errno or 0
    return RouteOperationError(operation, destination, code, os.strerror(code) if code else str(error))


def route_message(
    message_type: int,
    destination: Destination,
    tunnel_index: int,
    next_hop: NextHop | None,
    *,
    pid: int = 0,
    seq: int = 0,
) -> pfroute.RouteSocketMessage:
    """dmnc's RTM_ADD/RTM_DELETE for `destination`: the link form through the utun (`-interface`), or with a next
    hop the gateway form (RTF_GATEWAY, an AF_INET/AF_INET6 sockaddr as RTAX_GATEWAY: bsd/net/route.h)."""
    flags = pfroute.DMNC_ROUTE_FLAGS
    if destination.prefixlen == destination.max_prefixlen:
        flags |= pfroute.RTF_HOST  # route(8) marks a full-length destination as a host route
    if next_hop is None:
        return pfroute.RouteSocketMessage(
            message_type=message_type,
            destination=destination,
            flags=flags,
            gateway_interface=tunnel_index,
            pid=pid,
            seq=seq,
        )
    return pfroute.RouteSocketMessage(
        message_type=message_type,
        destination=destination,
        flags=flags | pfroute.RTF_GATEWAY,
        gateway=next_hop.gateway,
        pid=pid,
        seq=seq,
    )


class DarwinRouteManager(NextHopTable):
    """RouteManager on the routing socket for the utun `interface` (index `interface_index`)."""

    def __init__(
        self,
        interface: str,
        interface_index: int,
        transport: RoutingTransport,
        *,
        resync_interval_s: float = MONITOR_RESYNC_INTERVAL_S,
    ) -> None:
        super().__init__()
        self._resync_interval_s = resync_interval_s
        self._interface = interface
        self._interface_index = interface_index
        self._transport = transport
        self._pid = os.getpid()
        self._next_seq = 1
        self._dropped: Counter[str] = Counter()
        self._warnings = pfroute.RepeatedWarnings()

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
    def drop_counter(self) -> Counter[str]:
        """The counter this manager's decoders count malformed kernel messages in, by reason."""
        return self._dropped

    @property
    def repeated_warnings(self) -> pfroute.RepeatedWarnings:
        """Which repeats of a malformed-message warning this manager's decoders log."""
        return self._warnings

    async def aclose(self) -> None:
        self._transport.close()

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq = self._next_seq % 0x7FFFFFFF + 1
        return seq

    def _message(self, message_type: int, destination: Destination) -> bytes:
        seq = self._take_seq()
        next_hop = self._next_hops.get(destination.version)
        return pfroute.encode_route_message(
            route_message(message_type, destination, self._interface_index, next_hop, pid=self._pid, seq=seq)
        )

    async def add_many(self, destinations: Sequence[Destination], *, replace: bool = False) -> list[RouteResult]:
        """One RTM_ADD after another (a routing socket answers each write on its own), one result each."""
        return [await self._add(destination, replace=replace) for destination in destinations]

    async def _add(self, destination: Destination, *, replace: bool) -> RouteResult:
        try:
            await self._transport.send(self._message(pfroute.RTM_ADD, destination))
        except OSError as error:
            if error.errno != errno.EEXIST:
                return RouteResult(destination, _failure("add route", destination, error), changed=False)
            if not replace:
                return RouteResult(destination, RouteExistsError(destination), changed=False)
        else:
            return RouteResult(destination)
        # Restoring over another program's route: xnu keeps one route per destination and netmask, so it goes.
        try:
            await self._transport.send(self._message(pfroute.RTM_DELETE, destination))
            await self._transport.send(self._message(pfroute.RTM_ADD, destination))
        except OSError as error:
            return RouteResult(destination, _failure("replace route", destination, error), changed=False)
        return RouteResult(destination)

    async def delete_many(self, destinations: Sequence[Destination]) -> list[RouteResult]:
        """Our routes among `destinations`, each removed with its own RTM_DELETE; one result each. xnu's
        RTM_DELETE does not match on flags, so only destinations a fresh dump lists as ours are sent."""
        ours = {route.destination for route in await self.list_ours()}
        return [
            await self._delete(destination) if destination in ours else RouteResult(destination, changed=False)
            for destination in destinations
        ]

    async def _delete(self, destination: Destination) -> RouteResult:
        try:
            await self._transport.send(self._message(pfroute.RTM_DELETE, destination))
        except OSError as error:
            if error.errno == errno.ESRCH:
                return RouteResult(destination, changed=False)
            return RouteResult(destination, _failure("delete route", destination, error), changed=False)
        return RouteResult(destination)

    def installed_route(self, message: pfroute.RouteSocketMessage) -> InstalledRoute | None:
        """The InstalledRoute a kernel message describes; None for derived entries (clones, local, broadcast,
        multicast) and interface-scoped duplicates, which are not routes anybody added to the main table."""
        if message.destination is None or message.flags & (pfroute.DERIVED_ROUTE_FLAGS | pfroute.RTF_IFSCOPE):
            return None
        index = message.interface_index or message.gateway_interface or 0
        return InstalledRoute(
            destination=message.destination,
            interface=_interface_name(index),
            interface_index=index,
            # RTF_PROTO1 marks dmnc's routes, but `dmnc wg up` marks its interface routes through its own utun the
            # same way (commands/wg.py): of the interface routes only those through this utun are this service's;
            # a gateway route (the direct path, which only the service adds) is its own whichever interface it uses.
            ours=bool(message.flags & pfroute.RTF_PROTO1)
            and (index == self._interface_index or message.gateway is not None),
            gateway=message.gateway,
        )

    async def list_routes(self) -> list[InstalledRoute]:
        try:
            data = await self._transport.dump()
        except OSError as error:
            raise _failure("dump routes", None, error) from error
        messages = pfroute.decode_messages_untrusted(data, self._dropped, self._warnings)
        routes = (self.installed_route(message) for message in messages)
        return [route for route in routes if route is not None]

    async def list_ours(self) -> list[InstalledRoute]:
        return [route for route in await self.list_routes() if route.ours]

    async def lookup(self, address: Address) -> pfroute.RouteLookup | None:
        """The route the kernel uses for `address` (RTM_GET, as `route -n get`); None when it has none (ESRCH), or
        when no reply came within LOOKUP_TIMEOUT_S or the kernel dropped it (ENOBUFS)."""
        seq = self._take_seq()
        request = pfroute.encode_lookup_request(address, pid=self._pid, seq=seq)
        target = ipaddress.ip_network(address)
        try:
            lookup_socket = self._transport.open_lookup()
        except OSError as error:
            raise _failure("open routing socket", None, error) from error
        try:
            with trio.move_on_after(LOOKUP_TIMEOUT_S):
                try:
                    await lookup_socket.send(request)
                except OSError as error:
                    if error.errno == errno.ESRCH:
                        return None
                    raise _failure("look up the route to", target, error) from error
                while True:
                    try:
                        data = await lookup_socket.receive()
                    except OSError as error:
                        if error.errno == errno.ENOBUFS:
                            return None
                        raise _failure("look up the route to", target, error) from error
                    reply = pfroute.decode_lookup_reply_untrusted(
                        data, pid=self._pid, seq=seq, drops=self._dropped, warnings=self._warnings
                    )
                    if reply is not None:
                        return reply
            return None
        finally:
            lookup_socket.close()

    async def shadow_of(self, destination: Destination) -> Shadow | None:
        """ShadowCheck: the route the kernel really uses for an address in `destination`, when it does not go
        through dmnc's utun (a more specific route, such as a host route another tunnel left behind); None when
        it does, or when the kernel names no interface."""
        answer = await self.lookup(probe_address(destination))
        if answer is None or answer.interface_index == self._interface_index:
            return None
        if answer.interface_name is None and answer.interface_index == 0:
            return None
        route = answer.route
        # On the direct path dmnc's own route goes via the family's next hop on another interface, and the reply's
        # rtm_index names that interface: the kernel uses dmnc's route when it picked that route itself.
        next_hop = self._next_hops.get(destination.version)
        if (
            next_hop is not None
            and route.destination == destination
            and route.flags & pfroute.RTF_PROTO1
            and route.gateway == next_hop.gateway
        ):
            return None
        if answer.interface_name is not None:
            interface = printable(answer.interface_name)
        else:
            interface = _interface_name(answer.interface_index)
        gateway = f" (gateway {route.gateway})" if route.gateway is not None else ""
        return Shadow(None, None, f"{route.destination} via {interface}{gateway}")

    @asynccontextmanager
    async def monitor(self) -> AsyncIterator[AsyncIterator[RouteEvent]]:
        try:
            source = self._transport.open_monitor()
        except OSError as error:
            raise _failure("open routing socket", None, error) from error
        try:
            yield _RouteEventStream(self, source, self._resync_interval_s)
        finally:
            source.close()


class _RouteEventStream:
    def __init__(self, manager: DarwinRouteManager, source: MessageSource, resync_interval_s: float) -> None:
        self._manager = manager
        self._source = source
        self._resync_interval_s = resync_interval_s
        self._next_resync = trio.current_time() + resync_interval_s

    def __aiter__(self) -> _RouteEventStream:
        return self

    def _resync(self) -> RouteEvent:
        self._next_resync = trio.current_time() + self._resync_interval_s
        return RouteEvent(RouteEventKind.RESYNC_NEEDED, None)

    async def __anext__(self) -> RouteEvent:
        while True:
            # A deadline, not a timeout per read: a steady stream of unrelated messages must not postpone it.
            if trio.current_time() >= self._next_resync:
                return self._resync()
            data = b""
            try:
                with trio.move_on_at(self._next_resync):
                    data = await self._source.receive()
            except OSError as error:
                if error.errno == errno.ENOBUFS:
                    return self._resync()
                raise _failure("routing socket receive", None, error) from error
            if not data:
                continue  # the resync deadline passed
            event = self._event(data)
            if event is not None:
                return event

    def _event(self, data: bytes) -> RouteEvent | None:
        drops = self._manager.drop_counter
        if pfroute.decode_interface_index_untrusted(data, drops) == self._manager.interface_index:
            return RouteEvent(RouteEventKind.INTERFACE_CHANGED, None)
        message = pfroute.decode_route_message_untrusted(data, drops, self._manager.repeated_warnings)
        if message is None or message.message_type == pfroute.RTM_GET or message.errno:
            return None  # lookups and refused requests change nothing
        route = self._manager.installed_route(message)
        if route is None:
            return None
        kind = RouteEventKind.REMOVED if message.message_type == pfroute.RTM_DELETE else RouteEventKind.ADDED
        return RouteEvent(kind, route, sender_pid=message.pid or None, caused_by_us=message.pid == os.getpid())


def _interface_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if#{index}"


def open_darwin_route_manager(interface: str) -> DarwinRouteManager:
    try:
        index = socket.if_nametoindex(interface)
    except OSError as error:
        raise InterfaceNotFoundError(interface) from error
    try:
        transport = DarwinRoutingTransport()
    except OSError as error:
        raise _failure("open routing socket", None, error) from error
    return DarwinRouteManager(interface, index, transport)
