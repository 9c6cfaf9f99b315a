"""Where a ping's round trip goes: the left peer's forward pass, the right side, the left peer's reverse pass.

Kernel timestamps from an AF_PACKET socket in the left namespace (`SO_TIMESTAMPNS`): the echo request handed to
the TUN, the next WireGuard datagram leaving on the veth, the next one arriving, the echo reply out of the TUN. For
dmnc <-> wireguard-go and wireguard-go <-> wireguard-go, rounds interleaved. Run as root from the repository root:

    .venv/bin/python -m tests.bench.ping_path [--rounds 3] [--count 300] [--interval 0.01]

Medians per round in us (tests/bench/README.md, "Where a ping's time goes").
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import os
import socket
import statistics
import struct
import subprocess
import sys
import time

from tests.bench.bench_tunnel import Setup, dmnc_setup, wireguard_go_pair_setup

ETH_P_ALL = 3
SO_TIMESTAMPNS = 35  # Linux; not exported by the socket module
PACKET_OUTGOING = 4
ARPHRD_NONE = 65534  # a TUN device
ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
# WireGuard data messages carrying a ping: 84-byte packet + 32 bytes of WireGuard + 28 of UDP/IPv4, padded.
WG_DATAGRAM_LENGTHS = range(100, 200)


def sniff(seconds: float) -> None:
    """Print `kind direction detail timestamp_ns` per ICMP echo on a TUN and per ping-sized UDP datagram elsewhere."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.settimeout(0.5)
    end, lines = time.monotonic() + seconds, []
    while time.monotonic() < end:
        try:
            data, ancillary, _flags, address = sock.recvmsg(2048, 256)
        except TimeoutError:
            continue
        stamp = next(
            (
                sec * 10**9 + nsec
                for level, kind, value in ancillary
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS
                for sec, nsec in [struct.unpack("qq", value[:16])]
            ),
            None,
        )
        if stamp is None or len(data) < 28 or data[0] >> 4 != 4:
            continue
        direction = "out" if address[2] == PACKET_OUTGOING else "in"
        if address[3] == ARPHRD_NONE and data[9] == socket.IPPROTO_ICMP:
            header = (data[0] & 15) * 4
            if data[header] in (ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST):
                sequence = struct.unpack("!H", data[header + 6 : header + 8])[0]
                lines.append(f"tun {direction} {data[header]}:{sequence} {stamp}")
        elif data[9] == socket.IPPROTO_UDP and len(data) in WG_DATAGRAM_LENGTHS:
            lines.append(f"udp {direction} - {stamp}")
    print("\n".join(lines), flush=True)


def split(output: str) -> list[tuple[int, int, int]]:
    """Per answered ping: (forward, right side, reverse) in ns, from the sniffer's lines."""
    requests: dict[str, int] = {}
    replies: dict[str, int] = {}
    sent: list[int] = []
    arrived: list[int] = []
    for line in output.splitlines():
        kind, direction, detail, stamp_text = line.split()
        stamp = int(stamp_text)
        if kind == "tun":
            icmp_type, sequence = detail.split(":")
            if direction == "out" and int(icmp_type) == ICMP_ECHO_REQUEST:
                requests[sequence] = stamp
            elif direction == "in" and int(icmp_type) == ICMP_ECHO_REPLY:
                replies[sequence] = stamp
        else:
            (sent if direction == "out" else arrived).append(stamp)
    sent.sort()
    arrived.sort()
    rows = []
    for sequence, request in requests.items():
        reply = replies.get(sequence)
        out_index = bisect.bisect_left(sent, request)
        if reply is None or out_index == len(sent):
            continue
        in_index = bisect.bisect_left(arrived, sent[out_index])
        if in_index == len(arrived) or not sent[out_index] <= arrived[in_index] <= reply:
            continue
        rows.append((sent[out_index] - request, arrived[in_index] - sent[out_index], reply - arrived[in_index]))
    return rows


def probe(setup: Setup, count: int, interval: float) -> list[tuple[int, int, int]]:
    sniffer = setup.left.popen(
        [sys.executable, "-m", "tests.bench.ping_path", "--sniff", str(count * interval + 3)],
        stdout=subprocess.PIPE,
    )
    time.sleep(0.5)
    setup.left.run(["ping", "-n", "-q", "-c", str(count), "-i", str(interval), setup.right_address], timeout=120)
    output, _ = sniffer.communicate(timeout=30)
    return split(output.decode())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=300, help="pings per round and topology")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between pings")
    parser.add_argument("--sniff", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sniff is not None:
        sniff(args.sniff)
        return 0
    with contextlib.ExitStack() as stack:
        setups = [stack.enter_context(wireguard_go_pair_setup()), stack.enter_context(dmnc_setup())]
        for round_number in range(args.rounds):
            for setup in setups:
                rows = probe(setup, args.count, args.interval)
                if not rows:
                    raise RuntimeError(f"{setup.name}: no ping matched")
                forward, right, reverse = (statistics.median(row[i] for row in rows) / 1000 for i in range(3))
                print(
                    f"round {round_number + 1} {setup.name}: {len(rows)} pings, forward {forward:.0f} us, "
                    f"right side {right:.0f} us, reverse {reverse:.0f} us, sum {forward + right + reverse:.0f} us",
                    flush=True,
                )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
