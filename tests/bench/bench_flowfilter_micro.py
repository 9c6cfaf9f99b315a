"""Micro-benchmark of the flow filter alone (dmnc.tunnel.flowfilter): ns per packet and packets/s per direction.

The filter runs once per packet on the data path, next to the core's encapsulate or decapsulate (several us, see
tests/bench/bench_core.py). This shows its own share without the noise of a loaded machine: figures are CPU time
of this thread, the best of several batches.

Traffic is what a tunnel carries in steady state: `FLOWS` live flows, the host's packets (`outbound`, TCP ACKs and
UDP datagrams) and the VM's replies (`inbound`, full-size TCP segments, UDP datagrams and echo replies) spread over
all of them, IPv4 and IPv6, the clock advancing a little per batch as it does between the data path's wakeups;
and bulk transfers, where a batch is the packets of one flow.

Run: .venv/bin/python tests/bench/bench_flowfilter_micro.py   (not collected by pytest)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dmnc.tunnel.flowfilter import FlowFilter
from tests.unit.tunnel.packets import ACK, CONTAINER4, CONTAINER6, HOST4, HOST6, PSH, icmp, packed, tcp, udp

FLOWS = 1000  # live flows in the table: lookups hit a dict of realistic size, not one hot entry
BATCH = 20000
BATCHES = 15
PAYLOAD = 1360  # a full segment through a 1420-byte tunnel MTU
_ECHO_REQUEST, _ECHOV6_REQUEST, _ECHO_REPLY, _ECHOV6_REPLY = 8, 128, 0, 129


def host_and_vm_packets(host: str, remote: str) -> tuple[dict[str, list[bytes]], dict[str, list[bytes]]]:
    """Per kind, `FLOWS` packets the host sends and the VM's replies to them."""
    echo_request, echo_reply = (_ECHO_REQUEST, _ECHO_REPLY) if ":" not in host else (_ECHOV6_REQUEST, _ECHOV6_REPLY)
    ports = range(40000, 40000 + FLOWS)
    outbound = {
        "tcp": [tcp(host, port, remote, 5201) for port in ports],
        "udp": [udp(host, port, remote, 5201, bytes(PAYLOAD)) for port in ports],
        "icmp": [icmp(host, remote, echo_request, ident=port) for port in ports],
    }
    inbound = {
        "tcp": [tcp(remote, 5201, host, port, ACK | PSH) + bytes(PAYLOAD) for port in ports],
        "udp": [udp(remote, 5201, host, port, bytes(PAYLOAD)) for port in ports],
        "icmp": [icmp(remote, host, echo_reply, ident=port) for port in ports],
    }
    return outbound, inbound


def best_ns_per_packet(run_batch: Callable[[float], None]) -> float:
    timings = []
    for index in range(BATCHES):
        start = time.thread_time()
        run_batch(float(index) / 1000)
        timings.append(time.thread_time() - start)
    return min(timings) / BATCH * 1e9


def measure(judge: Callable[[bytes, float], bool], packets: list[bytes]) -> float:
    # The packets cycled through, picked beforehand so the loop costs only the call.
    batch = [packets[index % len(packets)] for index in range(BATCH)]

    def run_batch(now: float) -> None:
        for packet in batch:
            judge(packet, now)

    return best_ns_per_packet(run_batch)


def main() -> None:
    flow_filter = FlowFilter([packed(HOST4), packed(HOST6)], max_flows=8 * FLOWS)
    rows: list[tuple[str, float]] = []
    baseline = measure(lambda packet, now: True, [b""])
    for family, host, remote in (("IPv4", HOST4, CONTAINER4), ("IPv6", HOST6, CONTAINER6)):
        outbound, inbound = host_and_vm_packets(host, remote)
        for kind, packets in outbound.items():
            rows.append((f"outbound {family} {kind}", measure(flow_filter.outbound, packets)))
        for kind, packets in inbound.items():
            rows.append((f"inbound  {family} {kind}", measure(flow_filter.inbound, packets)))
        # A bulk transfer: a batch is one flow's packets, all judged at the batch's `now`.
        rows.append((f"outbound {family} tcp bulk", measure(flow_filter.outbound, outbound["tcp"][:1])))
        rows.append((f"inbound  {family} tcp bulk", measure(flow_filter.inbound, inbound["tcp"][:1])))
    if any(flow_filter.drops.values()):
        raise RuntimeError(f"the steady-state traffic was dropped: {dict(flow_filter.drops)}")
    print(f"{'':26} {'ns/packet':>10} {'Mpackets/s':>11}   ({FLOWS} flows per kind, best of {BATCHES} x {BATCH})")
    for name, ns in rows:
        print(f"{name:26} {ns:10.0f} {1e3 / ns:11.2f}")
    print(f"{'(empty call)':26} {baseline:10.0f} {1e3 / baseline:11.2f}")


if __name__ == "__main__":
    main()
