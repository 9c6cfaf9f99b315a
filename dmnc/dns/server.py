"""The DNS listeners: UDP and TCP on the host's tunnel addresses, answering through a `Responder`.

Port 53 (RFC 1035 section 4.2) when it is free on those addresses, else one free port shared by every listener (the
host's resolver configuration names one port). TCP follows RFC 7766: two-octet length framing (section 8),
several queries per connection answered in order, idle connections closed (section 6.2.3), a bounded number of
connections. Every query, UDP or TCP, passes the rate limiter before it is parsed.

The listeners never take anything else down: an address that cannot be bound is logged and left out, a socket error
while serving is counted and the loop goes on.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from dmnc.dns.answer import MAX_TCP_MESSAGE, Responder
from dmnc.dns.ratelimit import QueryLimiter

logger = logging.getLogger("dmnc.dns")

DNS_PORT = 53
# Idle TCP connections are closed after this long (RFC 7766 section 6.2.3 recommends "a few seconds" to tens).
TCP_IDLE_TIMEOUT_S = 10.0
# Open TCP connections at most; a further one is closed at once. Resolvers use TCP only for truncated answers.
MAX_TCP_CONNECTIONS = 64
# Binding the IPv6 tunnel address can fail until the kernel has finished with it (duplicate address detection, RFC
# 4862 section 5.4); retried this often, this far apart, before the address is left out.
BIND_ATTEMPTS = 25
BIND_RETRY_S = 0.2
# Tries to find one port free on every address after port 53 turned out taken.
FALLBACK_PORT_TRIES = 10
UDP_RECEIVE_BYTES = 65535
TCP_LENGTH_OCTETS = 2


class DnsBindError(Exception):
    """No listener could be opened; the message says why."""


@dataclass(frozen=True)
class Listeners:
    """The bound sockets and their common port."""

    port: int
    udp: tuple[trio.socket.SocketType, ...]
    tcp: tuple[trio.socket.SocketType, ...]
    addresses: tuple[str, ...]

    def close(self) -> None:
        for sock in (*self.udp, *self.tcp):
            sock.close()


async def open_listeners(addresses: Sequence[str], port: int = DNS_PORT) -> Listeners:
    """Bind UDP and TCP on every address at `port`, or on one free port for all when `port` is taken. Addresses that
    cannot be bound at all are left out (logged); DnsBindError when none can."""
    usable = [address for address in addresses if await _address_ready(address)]
    if not usable:
        raise DnsBindError(f"none of {', '.join(addresses)} can be bound")
    try:
        return _bind_all(usable, port)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise DnsBindError(f"cannot listen on port {port}: {error.strerror}") from error
        logger.warning("port %d is taken on %s; using another port", port, ", ".join(usable))
    last: OSError | None = None
    for _ in range(FALLBACK_PORT_TRIES):
        probe = _bound(usable[0], 0, socket.SOCK_DGRAM)
        free_port = probe.getsockname()[1]
        probe.close()
        try:
            return _bind_all(usable, free_port)
        except OSError as error:
            last = error
    raise DnsBindError(f"no port free on every tunnel address: {last}")


def _bind_all(addresses: Sequence[str], port: int) -> Listeners:
    opened: list[trio.socket.SocketType] = []
    try:
        for address in addresses:
            opened.append(_bound(address, port, socket.SOCK_DGRAM))
            if port == 0:
                port = opened[0].getsockname()[1]
            opened.append(_bound(address, port, socket.SOCK_STREAM))
    except OSError:
        for sock in opened:
            sock.close()
        raise
    return Listeners(
        port=port,
        udp=tuple(sock for sock in opened if sock.type == socket.SOCK_DGRAM),
        tcp=tuple(sock for sock in opened if sock.type == socket.SOCK_STREAM),
        addresses=tuple(addresses),
    )


def _bound(address: str, port: int, kind: socket.SocketKind) -> trio.socket.SocketType:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # Bound with the stdlib (trio's bind is async, for name resolution dmnc does not need), then handed to trio.
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            # A restarted dmnc rebinds at once though the old connections linger in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(MAX_TCP_CONNECTIONS)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return trio.socket.from_stdlib_socket(sock)


async def _address_ready(address: str) -> bool:
    """Whether `address` can be bound, waiting out the kernel's work on a fresh IPv6 address."""
    for _ in range(BIND_ATTEMPTS):
        try:
            _bound(address, 0, socket.SOCK_DGRAM).close()
        except OSError as error:
            if error.errno != errno.EADDRNOTAVAIL:
                logger.warning("DNS: cannot listen on %s: %s", address, error.strerror)
                return False
            await trio.sleep(BIND_RETRY_S)
        else:
            return True
    logger.warning("DNS: %s is not available on this host; not listening on it", address)
    return False


class DnsServer:
    """Serves `responder` on `listeners` until cancelled; drops and socket errors are counted in `counters`."""

    def __init__(self, responder: Responder, limiter: QueryLimiter, listeners: Listeners) -> None:
        self.responder = responder
        self.limiter = limiter
        self.listeners = listeners
        self.counters: Counter[str] = Counter()
        self._tcp_open = 0

    async def serve(self) -> None:
        async with trio.open_nursery() as nursery:
            for sock in self.listeners.udp:
                nursery.start_soon(self._serve_udp, sock)
            for sock in self.listeners.tcp:
                nursery.start_soon(self._serve_tcp, sock, nursery)

    def _admit(self, source: str) -> bool:
        return self.limiter.admit(source, trio.current_time())

    async def _serve_udp(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, source = await sock.recvfrom(UDP_RECEIVE_BYTES)
            except OSError:
                # ICMP errors of earlier sends surface here on some systems; the socket itself is fine.
                self.counters["udp_receive_errors"] += 1
                continue
            if not self._admit(source[0]):
                continue
            answer = self.responder.respond(data)
            if answer is None:
                continue
            try:
                await sock.sendto(answer, source)
            except OSError:
                self.counters["udp_send_errors"] += 1

    async def _serve_tcp(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            try:
                connection, source = await sock.accept()
            except OSError:
                self.counters["tcp_accept_errors"] += 1
                await trio.sleep(BIND_RETRY_S)  # e.g. EMFILE: give the open connections a moment to end
                continue
            if self._tcp_open >= MAX_TCP_CONNECTIONS:
                self.counters["tcp_connections_refused"] += 1
                connection.close()
                continue
            self._tcp_open += 1
            nursery.start_soon(self._serve_connection, trio.SocketStream(connection), source[0])

    async def _serve_connection(self, stream: trio.SocketStream, source: str) -> None:
        try:
            async with stream:
                buffer = bytearray()
                while True:
                    message = await _read_message(stream, buffer)
                    if message is None:
                        return
                    if not self._admit(source):
                        return  # over its limit: the connection is closed, as a UDP query would be dropped
                    answer = self.responder.respond(message, tcp=True)
                    if answer is None:
                        return
                    await stream.send_all(len(answer).to_bytes(TCP_LENGTH_OCTETS, "big") + answer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.counters["tcp_connection_errors"] += 1
        finally:
            self._tcp_open -= 1


async def _read_message(stream: trio.SocketStream, buffer: bytearray) -> bytes | None:
    """The next length-prefixed message (RFC 1035 section 4.2.2), None at EOF, after an idle timeout, or for a
    zero-length message."""
    with trio.move_on_after(TCP_IDLE_TIMEOUT_S):
        while len(buffer) < TCP_LENGTH_OCTETS or len(buffer) < TCP_LENGTH_OCTETS + _length(buffer):
            chunk = await stream.receive_some(MAX_TCP_MESSAGE)
            if not chunk:
                return None
            buffer += chunk
        size = _length(buffer)
        if size == 0:
            return None
        message = bytes(buffer[TCP_LENGTH_OCTETS : TCP_LENGTH_OCTETS + size])
        del buffer[: TCP_LENGTH_OCTETS + size]
        return message
    return None


def _length(buffer: bytearray) -> int:
    return int.from_bytes(buffer[:TCP_LENGTH_OCTETS], "big")
