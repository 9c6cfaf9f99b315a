"""Open a TUN with dmnc.tun (Linux /dev/net/tun or macOS utun), then answer `ping` to its peer address ourselves.

    python tests/integration/tunnel/tun_ping_responder.py        (as root; exit status is ping's)

Proves the whole device path on a real kernel: creation, point-to-point address, MTU, link up, reading the echo
requests the kernel routes into the device and writing replies it accepts. On Linux a lab test runs it inside a
namespace; on macOS it is meant for the CI's macOS runner (the utun framing cannot be exercised anywhere else).
"""

from __future__ import annotations

import ipaddress
import select
import struct
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from CI: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from dmnc.supervisor.echo_probe import internet_checksum
from dmnc.tun import TunAddress, TunDevice, open_tun

# RFC 5737 TEST-NET-2: nothing on a test machine routes it, so the only path to the peer is the TUN.
LOCAL = ipaddress.IPv4Interface("198.51.100.1/32")
PEER = ipaddress.IPv4Address("198.51.100.2")
PINGS = 3
ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
IPPROTO_ICMP = 1


def echo_reply(packet: bytes) -> bytes | None:
    """The IPv4 ICMP echo reply to `packet` if it is an echo request, else None."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != IPPROTO_ICMP:
        return None
    header_length = (packet[0] & 0x0F) * 4
    icmp = bytearray(packet[header_length:])
    if len(icmp) < 8 or icmp[0] != ICMP_ECHO_REQUEST:
        return None
    icmp[0] = ICMP_ECHO_REPLY
    icmp[2:4] = b"\0\0"
    icmp[2:4] = struct.pack("!H", internet_checksum(bytes(icmp)))
    header = bytearray(packet[:header_length])
    header[12:16], header[16:20] = packet[16:20], packet[12:16]
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", internet_checksum(bytes(header)))
    return bytes(header) + bytes(icmp)


def answer_until_exit(tun: TunDevice, ping: subprocess.Popen[bytes]) -> int:
    while ping.poll() is None:
        readable, _, _ = select.select([tun.fileno()], [], [], 0.2)
        if not readable:
            continue
        while (packet := tun.read_packet()) is not None:
            reply = echo_reply(packet)
            if reply is not None:
                tun.write_packet(reply)
    return ping.returncode


def main() -> int:
    tun = open_tun(None, mtu=1420, addresses=[TunAddress(LOCAL, PEER)])
    print(f"opened {tun.name}", flush=True)
    deadline_flag = "-t" if sys.platform == "darwin" else "-w"  # macOS ping: -t timeout; iputils: -w deadline
    try:
        ping = subprocess.Popen(["ping", "-n", "-c", str(PINGS), deadline_flag, "10", str(PEER)])
        return answer_until_exit(tun, ping)
    finally:
        tun.close()


if __name__ == "__main__":
    raise SystemExit(main())
