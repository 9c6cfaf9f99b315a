"""Two Tunnels (real Devices, fake TUNs, UDP on loopback) in one trio run: the data path without root."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trio

from dmnc.tunnel.datapath import Tunnel
from dmnc.tunnel.flowfilter import FilterDrop, FlowFilter
from dmnc.tunnel.udp import UdpEndpoint
from dmnc.wireguard import Device, DropReason, PeerConfig, SendDatagram, generate_private_key
from tests.fakes.tun import FakeTun

# Fits in a default socket receive buffer (~200 KiB, ~800 B of kernel accounting per datagram): none lost there.
FLOOD = 150
LEFT_IP = ipaddress.IPv4Address("10.44.0.1")
RIGHT_IP = ipaddress.IPv4Address("10.44.0.2")


def ipv4_packet(source: ipaddress.IPv4Address, destination: ipaddress.IPv4Address, payload: bytes) -> bytes:
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, 17, 0, source.packed, destination.packed
    )
    return header + payload


@dataclass
class Side:
    tunnel: Tunnel
    tun: FakeTun
    udp: UdpEndpoint


async def wait_for_packets(tun: FakeTun, count: int) -> list[bytes]:
    packets: list[bytes] = []
    with trio.fail_after(5):
        while len(packets) < count:
            await trio.lowlevel.wait_readable(tun.kernel)
            packets += tun.take_written()
    return packets


def udp_packet(source: ipaddress.IPv4Address, sport: int, destination: ipaddress.IPv4Address, dport: int) -> bytes:
    return ipv4_packet(source, destination, struct.pack(">HHHH", sport, dport, 9, 0) + b"u")


@pytest.fixture
def left_filter() -> FlowFilter | None:
    """The left side's flow filter (the host's one-way door); none unless a test overrides this fixture."""
    return None


@pytest.fixture
async def pair(nursery: trio.Nursery, left_filter: FlowFilter | None) -> AsyncIterator[tuple[Side, Side]]:
    left_key, right_key = generate_private_key(os.urandom), generate_private_key(os.urandom)
    sides = []
    udps = [UdpEndpoint.open(0, ["127.0.0.1"]), UdpEndpoint.open(0, ["127.0.0.1"])]
    for index, (own_key, peer_key) in enumerate(((left_key, right_key), (right_key, left_key))):
        device = Device(own_key, rng=os.urandom, wall_offset=Tunnel.wall_offset())
        peer_ip = RIGHT_IP if index == 0 else LEFT_IP
        other_udp = udps[1 - index]
        device.add_peer(
            PeerConfig(
                public_key=Device(peer_key, rng=os.urandom, wall_offset=0).public_key,
                allowed_ips=(ipaddress.ip_network(f"{peer_ip}/32"),),
                # Only the left side knows where to reach the right one, as the VM knows the host.
                endpoint=("127.0.0.1", other_udp.port) if index == 0 else None,
            )
        )
        tun = FakeTun(f"fake{index}")
        flow_filter = left_filter if index == 0 else None
        tunnel = Tunnel(device, tun, udps[index], batch=16, handshake_queue=8, flow_filter=flow_filter)
        await nursery.start(tunnel.run)
        sides.append(Side(tunnel, tun, udps[index]))
    yield sides[0], sides[1]
    for side in sides:
        side.udp.close()
        side.tun.close()


async def test_packets_cross_in_both_directions_after_the_handshake(pair: tuple[Side, Side]) -> None:
    left, right = pair
    outbound = [ipv4_packet(LEFT_IP, RIGHT_IP, b"ping %d" % number) for number in range(40)]
    for packet in outbound:
        left.tun.inject(packet)
    assert await wait_for_packets(right.tun, 40) == outbound
    inbound = [ipv4_packet(RIGHT_IP, LEFT_IP, b"pong %d" % number) for number in range(40)]
    for packet in inbound:
        right.tun.inject(packet)
    assert await wait_for_packets(left.tun, 40) == inbound

    (left_stats,) = left.tunnel.device.peer_stats().values()
    (right_stats,) = right.tunnel.device.peer_stats().values()
    assert left_stats.handshakes == right_stats.handshakes == 1
    # Once the endpoints are authenticated, both sides send on sockets connected to each other.
    assert left.udp.connected_endpoints() == [("127.0.0.1", right.udp.port)]
    assert right.udp.connected_endpoints() == [("127.0.0.1", left.udp.port)]
    assert left.tunnel.counters.udp_send_failed == right.tunnel.counters.udp_send_failed == 0


async def test_packets_to_unrouted_destinations_are_dropped_and_counted(pair: tuple[Side, Side]) -> None:
    left, right = pair
    left.tun.inject(ipv4_packet(LEFT_IP, ipaddress.IPv4Address("192.0.2.1"), b"nowhere"))
    left.tun.inject(b"\x00not an ip packet")
    with trio.fail_after(5):
        while sum(left.tunnel.device.drops.values()) < 2:
            await trio.sleep(0.01)
    assert right.tun.take_written() == []


async def test_handshake_flood_beyond_the_queue_is_answered_with_cookie_replies(pair: tuple[Side, Side]) -> None:
    left, right = pair
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        attacker.bind(("127.0.0.1", 0))
        # A genuine initiation (valid mac1) from a key the right side does not know, replayed many times.
        stranger = Device(generate_private_key(os.urandom), rng=os.urandom, wall_offset=Tunnel.wall_offset())
        stranger.add_peer(
            PeerConfig(
                public_key=right.tunnel.device.public_key,
                allowed_ips=(ipaddress.ip_network("0.0.0.0/0"),),
                endpoint=("127.0.0.1", right.udp.port),
            )
        )
        (initiation,) = [
            output.data
            for output in stranger.encapsulate(ipv4_packet(LEFT_IP, RIGHT_IP, b"x"), trio.current_time())
            if isinstance(output, SendDatagram)
        ]
        # Sent without a checkpoint in between: all of them wait in the kernel before the tunnel runs again.
        for _ in range(FLOOD):
            attacker.sendto(initiation, ("127.0.0.1", right.udp.port))
        with trio.fail_after(5):
            await trio.lowlevel.wait_readable(attacker)
        reply = attacker.recv(100)
    assert reply[0] == 3  # a cookie reply (type 3, whitepaper 5.4.7)
    assert len(reply) == 64
    with trio.fail_after(5):
        while sum(right.tunnel.device.drops.values()) < FLOOD:
            await trio.sleep(0.01)
    assert right.tunnel.device.drops[DropReason.COOKIE_REQUIRED] > 0
    assert right.tunnel.counters.handshake_queue_full > 0
    # Once the flood is worked off, the tunnel is not under load any more and comes up normally.
    packet = ipv4_packet(LEFT_IP, RIGHT_IP, b"still alive")
    left.tun.inject(packet)
    assert await wait_for_packets(right.tun, 1) == [packet]


async def test_mixed_sizes_keep_their_order_through_segmented_sends(pair: tuple[Side, Side]) -> None:
    left, right = pair
    sizes = [1000, 1000, 1000, 200, 1000, 40, 40, 1300, 1300, 1300, 1300, 999, 1000] * 5
    outbound = [ipv4_packet(LEFT_IP, RIGHT_IP, bytes([number % 256]) * size) for number, size in enumerate(sizes)]
    for packet in outbound:
        left.tun.inject(packet)
    assert await wait_for_packets(right.tun, len(outbound)) == outbound


@pytest.mark.parametrize("left_filter", [FlowFilter([LEFT_IP.packed])])
async def test_with_a_flow_filter_only_replies_reach_the_left_side(
    pair: tuple[Side, Side], caplog: pytest.LogCaptureFixture
) -> None:
    left, right = pair
    request = udp_packet(LEFT_IP, 5000, RIGHT_IP, 53)
    left.tun.inject(request)
    assert await wait_for_packets(right.tun, 1) == [request]
    unsolicited = [udp_packet(RIGHT_IP, 40000 + number, LEFT_IP, 8088) for number in range(3)]
    reply = udp_packet(RIGHT_IP, 53, LEFT_IP, 5000)
    for packet in [*unsolicited, reply]:
        right.tun.inject(packet)
    assert await wait_for_packets(left.tun, 1) == [reply]
    assert left.tunnel.flow_filter is not None
    assert left.tunnel.flow_filter.drops == {FilterDrop.INBOUND_NOT_ALLOWED: 3}
    refused = [record.getMessage() for record in caplog.records if "dropped" in record.getMessage()]
    assert refused == [
        "container→host connection to port 8088/udp dropped; use `--allow-inbound 8088/udp` or host.docker.internal"
    ]
    left.tun.inject(ipv4_packet(LEFT_IP, ipaddress.IPv4Address("224.0.0.22"), b"igmp"))
    with trio.fail_after(5):
        while not left.tunnel.flow_filter.drops[FilterDrop.OUTBOUND_MULTICAST]:
            await trio.sleep(0.01)
