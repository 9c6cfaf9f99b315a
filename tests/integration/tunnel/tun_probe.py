"""Run inside a test namespace: open a Linux TUN and echo one UDP datagram through it.

Prints `ready <interface>` once the interface is configured, waits for a line on stdin (the test inspects the
interface meanwhile), then sends a UDP datagram to the point-to-point peer through the kernel, reads it from the
TUN, writes it back with source and destination swapped, and prints the reply the socket received.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import sys

from dmnc.tun import TunAddress
from dmnc.tun.linux import open_linux_tun

LOCAL = ipaddress.IPv4Interface("10.77.0.1/24")
PEER = ipaddress.IPv4Address("10.77.0.2")
LOCAL6 = ipaddress.IPv6Interface("fd00:77::1/64")
PEER_PORT = 9999


def swap_udp_endpoints(packet: bytes) -> bytes:
    """An IPv4/UDP packet going back: addresses and ports swapped (IP checksum unchanged), UDP checksum off."""
    header_length = (packet[0] & 0x0F) * 4
    udp = packet[header_length:]
    return (
        packet[:12] + packet[16:20] + packet[12:16] + packet[20:header_length]
        + udp[2:4] + udp[0:2] + udp[4:6] + b"\0\0" + udp[8:]
    )  # fmt: skip


def main() -> None:
    tun = open_linux_tun(sys.argv[1], mtu=1400, addresses=[TunAddress(LOCAL, PEER), TunAddress(LOCAL6)])
    print("ready", tun.name, flush=True)
    sys.stdin.readline()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.sendto(b"through the tun", (str(PEER), PEER_PORT))
        while True:
            select.select([tun.fileno()], [], [], 5)
            packet = tun.read_packet()
            if packet is not None and packet[0] >> 4 == 4 and packet[9] == socket.IPPROTO_UDP:
                break
        assert tun.write_packet(swap_udp_endpoints(packet))
        reply, source = udp.recvfrom(100)
    print("reply", reply.decode(), source[0], source[1], flush=True)
    tun.close()


if __name__ == "__main__":
    main()
