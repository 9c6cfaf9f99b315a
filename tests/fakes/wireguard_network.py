"""An in-memory network of Devices on a fake clock, for driving the protocol core end to end in unit tests.

Datagrams sent by a device wait in `in_flight` until a test delivers, drops, duplicates or reorders them; packets a
device writes to its tunnel land in that host's `tunnel` list; every returned Drop is recorded in `drops`.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass, field

from dmnc.wireguard import (
    Device,
    Drop,
    DropReason,
    Endpoint,
    Output,
    PeerConfig,
    SendDatagram,
    Timing,
    WriteTunnel,
    generate_private_key,
)

WALL_OFFSET = 1_700_000_000.0  # makes `now + offset` a plausible UNIX time for TAI64N


class SeededRandom:
    """A deterministic `rng(n) -> bytes` so every test run sees the same keys, indices and jitter."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def __call__(self, size: int) -> bytes:
        return self._random.randbytes(size)


@dataclass
class InFlight:
    source: Endpoint
    destination: Endpoint
    data: bytes
    sent_at: float


@dataclass
class Host:
    name: str
    endpoint: Endpoint
    device: Device
    tunnel: list[bytes] = field(default_factory=list)
    drops: list[DropReason] = field(default_factory=list)


def ip4(source: str, destination: str, payload: bytes = b"payload") -> bytes:
    """A minimal IPv4/UDP-ish packet: a correct header (checksum not needed by the core) and the payload."""
    header = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(source).packed,
        ipaddress.IPv4Address(destination).packed,
    )
    return header + payload


def ip6(source: str, destination: str, payload: bytes = b"payload") -> bytes:
    header = struct.pack(
        ">IHBB16s16s",
        6 << 28,
        len(payload),
        17,
        64,
        ipaddress.IPv6Address(source).packed,
        ipaddress.IPv6Address(destination).packed,
    )
    return header + payload


class Network:
    """Devices keyed by endpoint, a shared fake clock and the datagrams between them."""

    def __init__(self, *, seed: int = 1, timing: Timing | None = None, start: float = 1000.0) -> None:
        self.rng = SeededRandom(seed)
        self.timing = timing or Timing()
        self.now = start
        self.hosts: dict[Endpoint, Host] = {}
        self.in_flight: list[InFlight] = []
        self.sent_log: list[InFlight] = []

    def add_host(self, name: str, endpoint: Endpoint) -> Host:
        device = Device(generate_private_key(self.rng), rng=self.rng, wall_offset=WALL_OFFSET, timing=self.timing)
        host = Host(name, endpoint, device)
        self.hosts[endpoint] = host
        return host

    def pair(
        self,
        *,
        a_knows_b: bool = True,
        b_knows_a: bool = True,
        preshared_key: bytes | None = None,
        a_keepalive: int = 0,
        b_keepalive: int = 0,
        a_endpoint: Endpoint = ("192.0.2.1", 51820),
        b_endpoint: Endpoint = ("192.0.2.2", 51821),
        b_lets_a_roam_anywhere: bool = True,
    ) -> tuple[Host, Host]:
        """Two hosts with tunnel addresses 10.0.0.1 / fd00::1 (a) and 10.0.0.2 / fd00::2 (b)."""
        a = self.add_host("a", a_endpoint)
        b = self.add_host("b", b_endpoint)
        a.device.add_peer(
            PeerConfig(
                b.device.public_key,
                preshared_key=preshared_key,
                allowed_ips=(ipaddress.ip_network("10.0.0.2/32"), ipaddress.ip_network("fd00::2/128")),
                endpoint=b.endpoint if a_knows_b else None,
                persistent_keepalive=a_keepalive,
            )
        )
        b.device.add_peer(
            PeerConfig(
                a.device.public_key,
                preshared_key=preshared_key,
                allowed_ips=(ipaddress.ip_network("10.0.0.1/32"), ipaddress.ip_network("fd00::1/128")),
                endpoint=a.endpoint if b_knows_a else None,
                persistent_keepalive=b_keepalive,
                roam_anywhere=b_lets_a_roam_anywhere,
            )
        )
        return a, b

    def handle(self, host: Host, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, SendDatagram):
                flight = InFlight(host.endpoint, output.endpoint, output.data, self.now)
                self.in_flight.append(flight)
                self.sent_log.append(flight)
            elif isinstance(output, WriteTunnel):
                host.tunnel.append(output.packet)
            else:
                assert isinstance(output, Drop)
                host.drops.append(output.reason)

    def send(self, host: Host, packet: bytes) -> None:
        self.handle(host, host.device.encapsulate(packet, self.now))

    def deliver(self, flight: InFlight, *, under_load: bool = False) -> None:
        host = self.hosts.get(flight.destination)
        if host is not None:
            self.handle(host, host.device.decapsulate(flight.data, flight.source, self.now, under_load=under_load))

    def deliver_next(self, *, under_load: bool = False) -> InFlight:
        flight = self.in_flight.pop(0)
        self.deliver(flight, under_load=under_load)
        return flight

    def deliver_all(self, *, limit: int = 10_000) -> None:
        for _ in range(limit):
            if not self.in_flight:
                return
            self.deliver_next()
        raise AssertionError("datagrams kept flowing: a loop between the devices")

    def drop_all(self) -> list[InFlight]:
        dropped, self.in_flight = self.in_flight, []
        return dropped

    def tick(self) -> None:
        for host in list(self.hosts.values()):
            self.handle(host, host.device.tick(self.now))

    def advance(self, seconds: float, *, deliver: bool = True) -> None:
        """Move the clock forward, running each device's timers at its deadlines (and delivering if asked)."""
        end = self.now + seconds
        if deliver:
            self.deliver_all()
        while True:
            deadlines = [d for d in (h.device.next_deadline() for h in self.hosts.values()) if d is not None]
            if not deadlines or min(deadlines) > end:
                break
            upcoming = min(deadlines)
            self.now = max(self.now, upcoming)
            self.tick()
            if deliver:
                self.deliver_all()
        self.now = end
