"""The tunnel's UDP endpoint: listening sockets (IPv4 and/or IPv6) on one port, plus connected sockets per peer.

Sending on a connected socket skips CPython's address parsing and the kernel's route lookup per packet (~1.6 us of a ~10
us budget per packet, measured with tests/bench/bench_tunnel.py). Every socket is bound with SO_REUSEPORT to the same
address and port, so a socket connected to a peer's endpoint shares the port with the listener; both Linux
(udp4_lib_lookup2 scoring) and the BSDs (in_pcblookup: exact match first) deliver that peer's datagrams to the connected
socket, everything else to the listener. Every socket is non-blocking, with 7 MiB buffers, and on Linux a run of
equal-sized datagrams to one peer can leave in one GSO send (`send_segments`).

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
from collections.abc import Sequence
from typing import Any

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


class UdpError(Exception):
    """A UDP socket cannot be opened, bound or used; the message names the address and the cause."""


class _PortTakenError(Exception):
    """Internal: a later family's bind found the port picked by the first one taken."""


# Port 0: how often to pick a new port when the one chosen for the first family is taken in another.
_FREE_PORT_ATTEMPTS = 8


def is_transient(error: OSError) -> bool:
    return error.errno in TRANSIENT_ERRNOS


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


class UdpEndpoint:
    """Listening sockets on one port (`port`), and sockets connected to known peer endpoints."""

    def __init__(self, listeners: Sequence[socket.socket], port: int) -> None:
        self.listeners = tuple(listeners)
        self.port = port
        self._listener_by_family = {sock.family: sock for sock in self.listeners}
        self.connected: dict[Endpoint, socket.socket] = {}
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

    def listener_for(self, endpoint: Endpoint) -> socket.socket | None:
        return self._listener_by_family.get(family_of(endpoint[0]))

    def send_unconnected(self, data: bytes, endpoint: Endpoint) -> bool:
        """sendto on the listener of `endpoint`'s family; False if the datagram was dropped. Raises UdpError."""
        listener = self.listener_for(endpoint)
        if listener is None:
            return False
        try:
            listener.sendto(data, endpoint)
        except OSError as error:
            if is_transient(error) or isinstance(error, socket.gaierror):
                return False
            raise UdpError(f"sending to {endpoint[0]} port {endpoint[1]}: {error.strerror}") from error
        return True

    def connect(self, endpoint: Endpoint) -> socket.socket | None:
        """A socket on our port connected to `endpoint` (created once); None if the system refuses one."""
        existing = self.connected.get(endpoint)
        if existing is not None:
            return existing
        listener = self.listener_for(endpoint)
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
        self.connected[endpoint] = sock
        return sock

    def disconnect(self, endpoint: Endpoint) -> socket.socket | None:
        """Forget the socket connected to `endpoint` and return it; the caller closes it after waking its reader."""
        return self.connected.pop(endpoint, None)

    def send_segments(self, sock: socket.socket, datagrams: list[bytes]) -> bool:
        """Send datagrams of equal size (the last may be shorter) on connected `sock` in one GSO sendmsg.

        Returns False, having sent nothing, when segmentation offload is unavailable (not Linux, or the kernel or
        route refuses it); the caller then sends them one by one and this endpoint stops trying. Raises OSError
        for any other failure of the send, like socket.send.
        """
        if not self.segmentation_offload:
            return False
        size = len(datagrams[0])
        try:
            sock.sendmsg([b"".join(datagrams)], [(socket.IPPROTO_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(size))])
        except OSError as error:
            if error.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                self.segmentation_offload = False
                return False
            raise
        return True

    def close(self) -> None:
        for sock in (*self.listeners, *self.connected.values()):
            sock.close()
        self.connected.clear()
