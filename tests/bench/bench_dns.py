"""Benchmark: dmnc's DNS answers vs dnsmasq answering the same names from a hosts file, on loopback.

Run: .venv/bin/python tests/bench/bench_dns.py   (not collected by pytest; needs dnsmasq from Debian's dnsmasq-base,
which tests/lab/install.sh installs; dnsmasq is started from its binary for the run, never as a service)

Measures, for each server, the median and p99 round trip of sequential UDP queries at low load (one outstanding
query), and, for dmnc, the CPU cost of one answer in the responder alone (what a flood costs the thread the tunnel's
data path shares, up to the global rate limit).
"""

from __future__ import annotations

import ipaddress
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import dns.message
import trio

from dmnc.dns.answer import Responder, Zone
from dmnc.dns.domain import parse_domain
from dmnc.dns.names import ContainerEndpoints, Reachability, build_table
from dmnc.dns.ratelimit import QueryLimiter, RateLimits
from dmnc.dns.server import DnsServer, open_listeners

CONTAINERS = 50
QUERIES = 2000
DOMAIN = parse_domain("dmnc.internal")
REACHABLE = Reachability(frozenset({ipaddress.ip_network("172.16.0.0/12")}), ipv6=False)


def containers() -> list[ContainerEndpoints]:
    return [
        ContainerEndpoints(
            str(index), f"web{index}", networks={"bench": (ipaddress.IPv4Address(f"172.20.0.{index + 2}"),)}
        )
        for index in range(CONTAINERS)
    ]


def queries() -> list[bytes]:
    return [dns.message.make_query(f"web{index % CONTAINERS}.dmnc.internal", "A").to_wire() for index in range(QUERIES)]


def round_trips(port: int, wires: list[bytes]) -> list[float]:
    times: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect(("127.0.0.1", port))
        for wire in wires:
            started = time.perf_counter()
            sock.send(wire)
            answer = sock.recv(65535)
            times.append(time.perf_counter() - started)
            assert answer[:2] == wire[:2]
    return times


def report(name: str, times: list[float]) -> None:
    ordered = sorted(times)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    median_us, p99_us = statistics.median(ordered) * 1e6, p99 * 1e6
    print(f"{name:<8} median {median_us:7.1f} us   p99 {p99_us:7.1f} us   ({len(times)} queries)")


def bench_dmnc(wires: list[bytes]) -> list[float]:
    results: list[float] = []

    async def main() -> None:
        listeners = await open_listeners(["127.0.0.1"], 0)
        responder = Responder(Zone(DOMAIN, build_table(containers(), REACHABLE)))
        # Limits out of the way: this measures answering, not dropping.
        limiter = QueryLimiter(
            RateLimits(per_source_rate=1e9, per_source_burst=1e9, global_rate=1e9, global_burst=1e9), 0
        )
        server = DnsServer(responder, limiter, listeners)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve)
            results.extend(await trio.to_thread.run_sync(round_trips, listeners.port, wires))
            nursery.cancel_scope.cancel()
        listeners.close()

    trio.run(main)
    return results


def bench_dnsmasq(wires: list[bytes]) -> list[float] | None:
    with tempfile.TemporaryDirectory(prefix="dmnc-bench-dns-") as folder:
        hosts = Path(folder) / "hosts"
        hosts.write_text("".join(f"172.20.0.{index + 2} web{index}.dmnc.internal\n" for index in range(CONTAINERS)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            process = subprocess.Popen(
                [
                    "dnsmasq",
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    f"--addn-hosts={hosts}",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    f"--port={port}",
                    "--cache-size=1000",
                    "--pid-file=",
                    "--user=root",
                    "--local=/dmnc.internal/",
                ],
                stderr=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            print("dnsmasq not found (apt-get install dnsmasq-base): no reference")
            return None
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    return round_trips(port, wires[:1]) and round_trips(port, wires)
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)  # dnsmasq starting: polled until it answers
        finally:
            process.terminate()
            process.wait()


def responder_cost(wires: list[bytes]) -> float:
    responder = Responder(Zone(DOMAIN, build_table(containers(), REACHABLE)))
    started = time.process_time()
    for wire in wires:
        responder.respond(wire)
    return (time.process_time() - started) / len(wires)


def main() -> None:
    wires = queries()
    report("dmnc", bench_dmnc(wires))
    reference = bench_dnsmasq(wires)
    if reference is not None:
        report("dnsmasq", reference)
    cost = responder_cost(wires * 5)
    print(
        f"dmnc responder CPU per answer: {cost * 1e6:.1f} us -> at the global limit of 1000 queries/s a flood costs "
        f"{cost * 1000 * 100:.1f}% of one core"
    )


if __name__ == "__main__":
    main()
