"""The tunnel's UDP endpoint, the data path's only contact with sockets: listening sockets (IPv4 and/or IPv6) on
one port, plus connected sockets per peer, in the spirit of wireguard-go's conn.Bind (conn/bind_std.go).

The data path sends with `send(endpoint, datagrams)` and receives through `UdpReceiver`s (one per socket); how a
datagram leaves (connected socket or sendto, one GSO sendmsg or one send each) and which socket errors lose one
datagram and which end the tunnel (`is_transient`) are decided here, once.

Sending on a connected socket skips CPython's address parsing and the kernel's route lookup per packet (~1.6 us of a ~10
us budget per packet, measured with tests/bench/bench_tunnel.py). Every socket is bound with SO_REUSEPORT to the same
address and port, so a socket connected to a peer's endpoint shares the port with the listener; both Linux
(udp4_lib_lookup2 scoring) and the BSDs (in_pcblookup: exact match first) deliver that peer's datagrams to the connected
socket, everything else to the listener. Every socket is non-blocking, with 7 MiB buffers, and on Linux a run of
equal-sized datagrams to one peer can leave in one GSO send (`segment_run_end`).

SO_REUSEPORT has a cost: another process of the same user (root, for dmnc) could bind the same port and share its
datagrams. Binding is refused when a process holds the port without SO_REUSEPORT, as a busy port should be.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from dmnc.wireguard.outputs import Endpoint

# The VM reaches the host through the VM's NAT, from an address dmnc cannot know in advance: listen on all.
DEFAULT_LISTEN_ADDRESSES = ("0.0.0.0", "::")  # noqa: S104
# Errors a datagram socket reports for one datagram (ICMP unreachable answers, a route that is briefly gone, a full
# queue): the datagram is dropped and counted; the socket stays usable.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.ENETDOWN,
        errno.EAGAIN,
        errno.ENOBUFS,
        errno.EADDRNOTAVAIL,
        errno.EPERM,  # a firewall rule rejected the datagram
        errno.EMSGSIZE,
    }
)


# Socket buffer size asked for, as wireguard-go does (conn/controlfns_linux.go, socketBufferSize = 7 MiB): bursts of
# a fast sender must wait in the kernel while this single-threaded process is busy, not be dropped. As root, the
# *FORCE options (Linux) lift the net.core.[rw]mem_max cap; elsewhere the kernel clamps the request to its maximum.
SOCKET_BUFFER_BYTES = 7 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", None)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", None)


# Linux UDP generic segmentation offload (include/uapi/linux/udp.h UDP_SEGMENT, since 4.18): one sendmsg carries
# several datagrams of one size, cut apart by the kernel, so a batch costs one trip through the stack and one
# syscall instead of one per datagram. The kernel accepts at most UDP_MAX_SEGMENTS (64, include/linux/udp.h)
# segments and a 64 KiB payload per call.
UDP_SEGMENT = 103
UDP_MAX_SEGMENTS = 64
MAX_UDP_PAYLOAD = 65507  # 65535 - 8 (UDP header) - 20 (IPv4 header)
_SEGMENT_SIZE = struct.Struct("=H")
# sendmsg with UDP_SEGMENT refused: no kernel support (ENOPROTOOPT, EOPNOTSUPP), a device or route without it (EIO,
# EINVAL; udp(7) "UDP_SEGMENT").
_NO_SEGMENTATION_ERRNOS = frozenset({errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP})
# The largest UDP datagram there is (the IP length field's limit): every receive fits.
MAX_DATAGRAM = 65535


class UdpError(Exception):
    """A UDP socket cannot be opened, bound or used; the message names the address and the cause."""


class _PortTakenError(Exception):
    """Internal: a later family's bind found the port picked by the first one taken."""


# Port 0: how often to pick a new port when the one chosen for the first family is taken in another.
_FREE_PORT_ATTEMPTS = 8


def is_transient(error: OSError) -> bool:
    """True for an error that loses one datagram (see TRANSIENT_ERRNOS); others mean the socket is unusable."""
    return error.errno in TRANSIENT_ERRNOS or isinstance(error, socket.gaierror)


def segment_run_end(datagrams: Sequence[bytes], start: int) -> int:
    """End (exclusive) of the run from `start` that one UDP GSO send can carry.

    The datagrams of a run all have the first one's size except a shorter last one (the kernel cuts the payload at
    that size), at most UDP_MAX_SEGMENTS of them and MAX_UDP_PAYLOAD bytes in total.
    """
    size = len(datagrams[start])
    limit = min(len(datagrams), start + UDP_MAX_SEGMENTS, start + MAX_UDP_PAYLOAD // max(size, 1))
    end = start + 1
    while end < limit:
        following = len(datagrams[end])
        if following > size:
            break
        end += 1
        if following < size:
            break
    return end


def normalize_endpoint(address: tuple[Any, ...]) -> Endpoint:
    """(host, port) from a socket address; IPv6 scope ids and flow info dropped, as the core's Endpoint wants."""
    host: str = address[0]
    port: int = address[1]
    return host.split("%", 1)[0], port


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _enlarge_buffers(sock: socket.socket) -> None:
    for forced, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        if forced is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, forced, SOCKET_BUFFER_BYTES)
            except PermissionError:
                pass  # unprivileged: fall through to the clamped option
            else:
                continue
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER_BYTES)


def _new_socket(family: socket.AddressFamily, bind_address: Endpoint) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _enlarge_buffers(sock)
        if family == socket.AF_INET6:
            # One socket per family, as wireguard-go does: dual-stack would report IPv4 peers as ::ffff:a.b.c.d.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(bind_address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _claim_address(family: socket.AddressFamily, bind_address: Endpoint) -> Endpoint:
    """The address a listener may take: `bind_address`, with the port chosen for port 0. Raises OSError.

    Listeners are bound with SO_REUSEPORT (so connected sockets can share their port), and Linux lets any socket
    of the same user with SO_REUSEPORT join a port: a second dmnc, or any root program asking for it, would silently
    share ours and receive some of the peer's datagrams. A probe bound without the option fails with EADDRINUSE
    while anyone holds the address, so a taken port is reported instead of shared.
    """
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(bind_address)
        port: int = probe.getsockname()[1]
    finally:
        probe.close()
    return bind_address[0], port


@dataclass(slots=True)
class Received:
    """What one `UdpReceiver.receive` call got: datagrams with their sources, and the transient errors skipped."""

    datagrams: list[tuple[bytes, Endpoint]] = field(default_factory=list)
    errors: int = 0  # ICMP errors queued on the socket (e.g. the peer's port was closed): not datagrams
    drained: bool = False  # the socket ran empty before the limit


class UdpReceiver:
    """The receiving side of one socket: a listener (any source) or a socket connected to one peer's endpoint."""

    __slots__ = ("_buffer", "_port", "_socket", "connected_to")

    def __init__(self, sock: socket.socket, connected_to: Endpoint | None, port: int) -> None:
        self._socket = sock
        self._port = port
        self._buffer = bytearray(MAX_DATAGRAM)
        self.connected_to = connected_to

    async def wait_readable(self) -> bool:
        """Wait until a datagram (or an error) is queued; False once the socket was retired (`keep_connected`)."""
        if self._socket.fileno() < 0:
            return False
        try:
            await trio.lowlevel.wait_readable(self._socket)
        except trio.ClosedResourceError:
            return False
        return True

    def receive(self, limit: int) -> Received | None:
        """Take up to `limit` datagrams or errors without blocking; None once the socket is closed. Raises UdpError
        for an error that is not one datagram's."""
        sock, buffer, connected_to = self._socket, self._buffer, self.connected_to
        view = memoryview(buffer)
        received = Received()
        datagrams = received.datagrams
        for _ in range(limit):
            try:
                if connected_to is None:
                    length, address = sock.recvfrom_into(buffer)
                    source = normalize_endpoint(address)
                else:
                    length = sock.recv_into(buffer)
                    source = connected_to
            except BlockingIOError:
                received.drained = True
                break
            except OSError as error:
                if sock.fileno() < 0:
                    return None  # retired after its peer roamed
                if not is_transient(error):
                    raise UdpError(f"receiving on UDP port {self._port}: {error.strerror}") from error
                received.errors += 1
                continue
            datagrams.append((bytes(view[:length]), source))
        return received


class UdpEndpoint:
    """Listening sockets on one port (`port`), and sockets connected to known peer endpoints.

    `send` may be called from a thread other than trio's (the tunnel's sender thread); everything else is called
    from trio's thread.
    """

    def __init__(self, listeners: Sequence[socket.socket], port: int) -> None:
        self.listeners = tuple(listeners)
        self.port = port
        self._listener_by_family = {sock.family: sock for sock in self.listeners}
        self._connected: dict[Endpoint, socket.socket] = {}
        self.segmentation_offload = sys.platform == "linux"

    @classmethod
    def open(cls, port: int = 0, addresses: Sequence[str] = DEFAULT_LISTEN_ADDRESSES) -> UdpEndpoint:
        """Bind every address in `addresses` on `port`; port 0 picks one free port shared by all of them.

        An address family the host lacks (no IPv6) is skipped when other addresses were bound. Raises UdpError.
        """
        if not addresses:
            raise UdpError("no listen address given")
        for host in addresses:
            try:
                ipaddress.ip_address(host)
            except ValueError as error:
                raise UdpError(f"listen address {host!r} is not an IP address") from error
        attempts_left = _FREE_PORT_ATTEMPTS if port == 0 else 1
        while True:
            try:
                return cls._bind_all(port, addresses)
            except _PortTakenError as error:
                # The port the first bind picked is taken in another family: with port 0, pick again.
                attempts_left -= 1
                if attempts_left == 0:
                    raise UdpError(str(error)) from error

    @classmethod
    def _bind_all(cls, port: int, addresses: Sequence[str]) -> UdpEndpoint:
        listeners: list[socket.socket] = []
        chosen_port = port
        failures: list[str] = []
        try:
            for host in addresses:
                try:
                    family = family_of(host)
                    sock = _new_socket(family, _claim_address(family, (host, chosen_port)))
                except OSError as error:
                    if error.errno == errno.EAFNOSUPPORT:
                        failures.append(f"{host}: {error.strerror}")
                        continue
                    message = f"binding UDP {host} port {chosen_port}: {error.strerror}"
                    if error.errno == errno.EADDRINUSE and listeners:
                        raise _PortTakenError(message) from error
                    raise UdpError(message) from error
                listeners.append(sock)
                chosen_port = sock.getsockname()[1]
        except (UdpError, _PortTakenError):
            for sock in listeners:
                sock.close()
            raise
        if not listeners:
            raise UdpError(f"no UDP listen address could be bound: {'; '.join(failures)}")
        return cls(listeners, chosen_port)

    def receivers(self) -> list[UdpReceiver]:
        """One receiver per listening socket."""
        return [UdpReceiver(sock, None, self.port) for sock in self.listeners]

    def send(self, endpoint: Endpoint, datagrams: Sequence[bytes]) -> int:
        """Send `datagrams` to `endpoint` in order; returns how many were lost (transient errors). Raises UdpError.

        On the socket connected to `endpoint` if there is one (runs of equal sizes as one GSO sendmsg each), else
        with sendto on the listener of its family.
        """
        sock = self._connected.get(endpoint)
        if sock is None:
            listener = self._listener_by_family.get(family_of(endpoint[0]))
            if listener is None:
                return len(datagrams)
            return self._send_each(listener, endpoint, datagrams, unconnected=True)
        if len(datagrams) == 1 or not self.segmentation_offload:
            return self._send_each(sock, endpoint, datagrams, unconnected=False)
        lost, start, count = 0, 0, len(datagrams)
        while start < count:
            end = segment_run_end(datagrams, start)
            run = datagrams[start:end]
            lost_of_run = None if end - start == 1 else self._send_segments(sock, endpoint, run)
            lost += self._send_each(sock, endpoint, run, unconnected=False) if lost_of_run is None else lost_of_run
            start = end
        return lost

    def _send_each(
        self, sock: socket.socket, endpoint: Endpoint, datagrams: Sequence[bytes], *, unconnected: bool
    ) -> int:
        lost = 0
        for data in datagrams:
            try:
                if unconnected:
                    sock.sendto(data, endpoint)
                else:
                    sock.send(data)
            except OSError as error:
                _check_transient(error, sock, endpoint)
                lost += 1
        return lost

    def _send_segments(self, sock: socket.socket, endpoint: Endpoint, run: Sequence[bytes]) -> int | None:
        """Send a run (see `segment_run_end`) on connected `sock` in one GSO sendmsg: how many were lost (all of
        them on a transient error), or None, having sent nothing, when the kernel or route refuses segmentation
        offload (the caller then sends them one by one, and this endpoint stops trying). Raises UdpError."""
        segment_size = _SEGMENT_SIZE.pack(len(run[0]))
        try:
            sock.sendmsg([b"".join(run)], [(socket.IPPROTO_UDP, UDP_SEGMENT, segment_size)])
        except OSError as error:
            if error.errno in _NO_SEGMENTATION_ERRNOS:
                self.segmentation_offload = False
                return None
            _check_transient(error, sock, endpoint)
            return len(run)
        return 0

    def is_connected(self, endpoint: Endpoint) -> bool:
        return endpoint in self._connected

    def connected_endpoints(self) -> list[Endpoint]:
        return list(self._connected)

    def connect(self, endpoint: Endpoint) -> UdpReceiver | None:
        """Connect a socket on our port to `endpoint`: its receiver, or None if already connected or refused."""
        if endpoint in self._connected:
            return None
        listener = self._listener_by_family.get(family_of(endpoint[0]))
        if listener is None:
            return None
        try:
            sock = _new_socket(listener.family, listener.getsockname()[:2])
        except OSError:
            return None
        try:
            sock.connect(endpoint)
        except OSError:
            sock.close()
            return None
        self._connected[endpoint] = sock
        return UdpReceiver(sock, endpoint, self.port)

    def keep_connected(self, endpoints: Collection[Endpoint]) -> None:
        """Close the sockets connected to any other endpoint (their peers roamed); their receivers then end."""
        for stale in [known for known in self._connected if known not in endpoints]:
            sock = self._connected.pop(stale)
            trio.lowlevel.notify_closing(sock)
            sock.close()

    def close(self) -> None:
        for sock in (*self.listeners, *self._connected.values()):
            sock.close()
        self._connected.clear()


def _check_transient(error: OSError, sock: socket.socket, endpoint: Endpoint) -> None:
    """The one send-error policy: return for a lost datagram, raise UdpError when the socket is unusable.

    A socket retired by `keep_connected` while a send on it was under way (the sender thread) loses that send.
    """
    if is_transient(error) or sock.fileno() < 0:
        return
    raise UdpError(f"sending to {endpoint[0]} port {endpoint[1]}: {error.strerror}") from error
