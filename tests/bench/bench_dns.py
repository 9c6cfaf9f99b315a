"""Benchmark: dmnc's DNS answers vs dnsmasq, and what a query flood costs the tunnel, each in one run.

Run as root from the repository root (not collected by pytest):

    .venv/bin/python -m tests.bench.bench_dns [--rounds 3] [--seconds 5] [--flood-rate 5000] [--json PATH]
                                              [--no-tunnel]

1. Latency at low load (one query outstanding), on loopback, interleaved rounds: dmnc's server (this checkout's
   Responder and DnsServer, rate limits out of the way) with its answer cache and without it, and dnsmasq (Debian's
   dnsmasq-base, which tests/lab/install.sh installs; started from its binary for the run, never as a service)
   answering the same names from a hosts file: the reference. Each server is a process of its own.
2. The responder's CPU time per answer, from the cache (a repeated question) and the full path (dnspython parse
   and encode), in this process: what an answered query costs the thread the tunnel's data path shares.
3. Tunnel throughput during a flood (dmnc wg up with the DNS server in its trio run, tests/bench/dns_wg_up.py, to
   wireguard-go across a veth, tests/integration/tunnel/peers.py): iperf3 TCP host->VM and VM->host with no flood,
   with a flood of repeated questions (answered from the cache) and with a flood of always new names (NXDOMAIN,
   every one through the full path: the cache's worst case). The flood comes from `FLOOD_SOURCES` addresses in the
   host namespace at --flood-rate queries/s in all, so the per-source limits let all of it through and the global
   limit (dmnc.dns.ratelimit) is what bounds the answered rate. The three conditions alternate in every round.

Figures drift between runs and machines; compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.message
import trio

from dmnc.dns.answer import Responder, Zone
from dmnc.dns.domain import parse_domain
from dmnc.dns.names import ContainerEndpoints, Reachability, build_table
from dmnc.dns.ratelimit import QueryLimiter, RateLimits
from dmnc.dns.server import DnsServer, open_listeners
from tests.bench.bench_tunnel import iperf, iperf_server
from tests.integration.tunnel.peers import DMNC_ADDRESS, WGGO_ADDRESS, dmnc_and_wireguard_go
from tests.lab.netns import LabCommandError, Netns, stop_process, wait_for_ping

CONTAINERS = 50
LATENCY_QUERIES = 1000  # per server and round
DOMAIN = parse_domain("dmnc.internal")
REACHABLE = Reachability(frozenset({ipaddress.ip_network("172.16.0.0/12")}), ipv6=False)
# The flood's source addresses: more sources than the global limit's rate over the per-source rate, so the global
# bucket is the one that fills (dmnc.dns.ratelimit: 1000/s in all, 100/s per source).
FLOOD_SOURCES = 50
FLOOD_SOURCE_NETWORK = ipaddress.ip_network("10.45.0.0/16")
# The flood is sent in bursts this often; the rate is kept over the run.
FLOOD_TICK_S = 0.01
# Precomputed flood queries (the worker cycles through them; new names never repeat within a run).
FLOOD_QUERIES = 200_000
STARTUP_TIMEOUT_S = 10.0
IPERF_ATTEMPTS = 3
# RFC 1035 section 4.1.1: the question follows the 12-octet header.
QUESTION_OFFSET = 12
REPOSITORY = Path(__file__).resolve().parents[2]


def containers() -> list[ContainerEndpoints]:
    return [
        ContainerEndpoints(
            str(index), f"web{index}", networks={"bench": (ipaddress.IPv4Address(f"172.20.0.{index + 2}"),)}
        )
        for index in range(CONTAINERS)
    ]


def repeated_queries(count: int) -> list[bytes]:
    """Questions for the containers' names, cycled: after the first round, every one is in the cache."""
    return [dns.message.make_query(f"web{index % CONTAINERS}.dmnc.internal", "A").to_wire() for index in range(count)]


def new_name_queries(count: int) -> list[bytes]:
    """Questions for names never asked before: each misses the cache and gets NXDOMAIN through the full path."""
    salt = random.getrandbits(32)
    return [dns.message.make_query(f"n{salt:x}-{index}.dmnc.internal", "A").to_wire() for index in range(count)]


# --- 1. latency at low load ---------------------------------------------------------------------------------------


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
            if answer[:2] != wire[:2]:
                raise RuntimeError("an answer to another query")
    return times


def answers_soon(port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            round_trips(port, repeated_queries(1))
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # the server is starting: polled until it answers
        else:
            return


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve(port: int, cache_size: int) -> None:
    """The `serve` subcommand: dmnc's DNS server on 127.0.0.1:`port` until killed, rate limits out of the way."""

    async def run() -> None:
        listeners = await open_listeners(["127.0.0.1"], port)
        responder = Responder(Zone(DOMAIN, build_table(containers(), REACHABLE)), cache_size=cache_size)
        unlimited = RateLimits(per_source_rate=1e9, per_source_burst=1e9, global_rate=1e9, global_burst=1e9)
        await DnsServer(responder, QueryLimiter(unlimited, trio.current_time()), listeners).serve()

    trio.run(run)


@contextlib.contextmanager
def server_process(argv: list[str], port: int) -> Iterator[int]:
    """A DNS server process on 127.0.0.1:`port` for the block; yields the port once it answers."""
    try:
        process = subprocess.Popen(argv, cwd=REPOSITORY, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SystemExit(f"{argv[0]} not found (tests/lab/install.sh installs the lab's tools)") from None
    try:
        answers_soon(port)
        yield port
    finally:
        process.terminate()
        process.wait()


def dmnc_server(cache_size: int) -> contextlib.AbstractContextManager[int]:
    port = free_udp_port()
    return server_process([sys.executable, "-m", "tests.bench.bench_dns", "serve", str(port), str(cache_size)], port)


@contextlib.contextmanager
def dnsmasq_server() -> Iterator[int]:
    with tempfile.TemporaryDirectory(prefix="dmnc-bench-dns-") as folder:
        hosts = Path(folder) / "hosts"
        hosts.write_text("".join(f"172.20.0.{index + 2} web{index}.dmnc.internal\n" for index in range(CONTAINERS)))
        port = free_udp_port()
        argv = [
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
        ]
        with server_process(argv, port):
            yield port


def percentiles_us(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1e6,
        "queries": len(ordered),
    }


def latency(rounds: int) -> dict[str, dict[str, float]]:
    wires = repeated_queries(LATENCY_QUERIES)
    times: dict[str, list[float]] = {"dmnc": [], "dmnc, no cache": [], "dnsmasq": []}
    with (
        dmnc_server(cache_size=1024) as cached,
        dmnc_server(cache_size=0) as uncached,
        dnsmasq_server() as dnsmasq,
    ):
        ports = {"dmnc": cached, "dmnc, no cache": uncached, "dnsmasq": dnsmasq}
        for round_number in range(rounds):
            names = list(ports) if round_number % 2 == 0 else list(reversed(ports))
            for name in names:
                times[name] += round_trips(ports[name], wires)
    return {name: percentiles_us(values) for name, values in times.items()}


# --- 2. CPU per answer ----------------------------------------------------------------------------------------------


def cpu_per_answer_us(responder: Responder, wires: list[bytes]) -> float:
    best = float("inf")
    for _ in range(5):  # the best of several passes: other load only ever adds
        started = time.thread_time()
        for wire in wires:
            responder.respond(wire)
        best = min(best, (time.thread_time() - started) / len(wires))
    return best * 1e6


def responder_costs() -> dict[str, float]:
    zone = Zone(DOMAIN, build_table(containers(), REACHABLE))
    wires = repeated_queries(2000)
    cached = Responder(zone)
    for wire in wires[:CONTAINERS]:
        cached.respond(wire)
    return {
        "cache hit us": cpu_per_answer_us(cached, wires),
        "full path us": cpu_per_answer_us(Responder(zone, cache_size=0), wires),
        "full path, NXDOMAIN us": cpu_per_answer_us(Responder(zone, cache_size=0), new_name_queries(2000)),
        "cache hit in a worker thread, wall us": worker_thread_wall_us(cached, wires),
    }


def worker_thread_wall_us(responder: Responder, wires: list[bytes]) -> float:
    """Wall time per answer handed to a worker thread (trio.to_thread) and back, one at a time: what moving the
    answers off the data path's thread would add, on top of the answer itself, which holds the GIL all the same."""

    async def answer_all() -> float:
        started = time.perf_counter()
        for wire in wires:
            await trio.to_thread.run_sync(responder.respond, wire)
        return (time.perf_counter() - started) / len(wires)

    return min(trio.run(answer_all) for _ in range(3)) * 1e6


# --- 3. tunnel throughput during a flood ----------------------------------------------------------------------------


def flood_wires(kind: str) -> Callable[[int], bytes]:
    """The flood's n-th query: one of the containers' names (`repeated`) or a name never asked before (`new`), built
    by patching templates, so the worker starts at once and keeps up its rate."""
    if kind == "repeated":
        templates = repeated_queries(CONTAINERS)
        return lambda number: number.to_bytes(4, "big")[2:] + templates[number % CONTAINERS][2:]
    label = f"n{random.getrandbits(32):08x}-{0:012x}"
    template = dns.message.make_query(f"{label}.dmnc.internal", "A").to_wire()
    counter_end = QUESTION_OFFSET + 1 + len(label)  # the first label's length octet, then the label
    counter_start = counter_end - 12
    return lambda number: (
        number.to_bytes(4, "big")[2:] + template[2:counter_start] + f"{number:012x}".encode() + template[counter_end:]
    )


def flood(target: str, rate: float, kind: str) -> None:
    """The `flood` subcommand: `rate` queries/s to `target`:53 from FLOOD_SOURCES addresses until SIGTERM; then it
    prints how many it sent and how many were answered."""
    query = flood_wires(kind)
    sockets = []
    for host in list(FLOOD_SOURCE_NETWORK.hosts())[:FLOOD_SOURCES]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((str(host), 0))
        sock.connect((target, 53))
        sock.setblocking(False)
        sockets.append(sock)
    stop = False

    def stop_flooding(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, stop_flooding)
    print("flooding", flush=True)
    started = time.monotonic()
    due_sent = sent = answered = 0
    while not stop:
        due = int((time.monotonic() - started) * rate)
        while due_sent < due:
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                sockets[due_sent % len(sockets)].send(query(due_sent))
                sent += 1  # counted once the kernel took it
            due_sent += 1
        for sock in sockets:
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                while sock.recv(65535):
                    answered += 1
        time.sleep(FLOOD_TICK_S)
    elapsed = time.monotonic() - started
    print(json.dumps({"sent_per_s": sent / elapsed, "answered_per_s": answered / elapsed}), flush=True)


def cpu_seconds(pid: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5) (utime, stime), counted after the ")" closing the command name.
    return (int(fields[11]) + int(fields[12])) / ticks


def tunnel_during_flood(rounds: int, seconds: int, rate: float) -> dict[str, dict[str, list[float]]]:
    """Per condition and metric, one sample per round (rounds aligned: sample i of every condition is round i)."""
    runner = (sys.executable, "-m", "tests.bench.dns_wg_up")
    conditions = ("no flood", "flood, repeated names", "flood, new names")
    samples: dict[str, dict[str, list[float]]] = {condition: {} for condition in conditions}

    @contextlib.contextmanager
    def flooding(host: Netns, condition: str) -> Iterator[dict[str, float]]:
        """Floods during the block; the dict then holds the worker's sent and answered queries per second."""
        rates: dict[str, float] = {}
        if condition == "no flood":
            yield rates
            return
        kind = "repeated" if "repeated" in condition else "new"
        command = [sys.executable, "-m", "tests.bench.bench_dns", "flood", DMNC_ADDRESS, str(rate), kind]
        worker = host.popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE)
        assert worker.stdout is not None
        try:
            if worker.stdout.readline().strip() != b"flooding":
                raise RuntimeError(f"the flood worker did not start (exit status {worker.wait()})")
            yield rates
        finally:
            stop_process(worker)
        rates.update(json.loads(worker.stdout.read()))

    with dmnc_and_wireguard_go(dmnc_runner=runner) as topology:
        host, vm = topology.left, topology.right
        if not wait_for_ping(host, WGGO_ADDRESS, timeout=5):
            raise RuntimeError("dmnc with DNS <-> wireguard-go: no ping through the tunnel")
        host.run(["ip", "route", "add", "local", str(FLOOD_SOURCE_NETWORK), "dev", "lo"])
        process = topology.dmnc.process
        assert process is not None
        if dig_once(host, DMNC_ADDRESS) is None:
            raise RuntimeError("dmnc's DNS server does not answer on the tunnel address")
        measurements: list[tuple[str, Callable[[], float]]] = [
            ("TCP host->VM Mbit/s", lambda: iperf_retried(host, seconds, reverse=False)),
            ("TCP VM->host Mbit/s", lambda: iperf_retried(host, seconds, reverse=True)),
        ]
        with iperf_server(vm):
            for round_number in range(rounds):
                order = conditions if round_number % 2 == 0 else tuple(reversed(conditions))
                for condition in order:
                    overflows_before, flood_started = udp_receive_buffer_errors(host), time.monotonic()
                    with flooding(host, condition) as flood_rates:
                        for name, measure in measurements:
                            cpu_before, wall_before = cpu_seconds(process.pid), time.monotonic()
                            value = measure()
                            cpu = 100 * (cpu_seconds(process.pid) - cpu_before) / (time.monotonic() - wall_before)
                            samples[condition].setdefault(name, []).append(value)
                            samples[condition].setdefault(name.split(" Mbit/s")[0] + " dmnc CPU %", []).append(cpu)
                    overflows = udp_receive_buffer_errors(host) - overflows_before
                    flood_rates["kernel_dropped_per_s"] = overflows / (time.monotonic() - flood_started)
                    for name, value in flood_rates.items():
                        samples[condition].setdefault(name, []).append(value)
                print(f"flood round {round_number + 1}/{rounds} done", file=sys.stderr)
    return samples


def flood_table(samples: dict[str, dict[str, list[float]]]) -> list[str]:
    """Medians per condition; for throughput also the ratio to no flood, computed round by round (each round's
    conditions ran minutes apart at most, so a change in the machine's load between rounds cancels out): the median
    ratio and its range."""
    baseline = samples["no flood"]
    lines = []
    for condition, by_name in samples.items():
        fields = []
        for name, values in by_name.items():
            field = f"{name} {statistics.median(values):.0f}"
            if "Mbit/s" in name and condition != "no flood":
                ratios = [value / reference for value, reference in zip(values, baseline[name], strict=True)]
                field += f" ({statistics.median(ratios):.2f}x, {min(ratios):.2f}-{max(ratios):.2f})"
            fields.append(field)
        lines.append(f"  {condition:22} {', '.join(fields)}")
    return lines


def udp_receive_buffer_errors(namespace: Netns) -> int:
    """The namespace's count of UDP datagrams the kernel dropped on a full socket receive buffer (RcvbufErrors in
    /proc/net/snmp, see proc(5) and RFC 4113's udpInErrors, of which it is a part)."""
    header, values = [
        line.split() for line in namespace.run(["cat", "/proc/net/snmp"]).stdout.splitlines() if line.startswith("Udp:")
    ][:2]
    return int(values[header.index("RcvbufErrors")])


def iperf_retried(host: Netns, seconds: int, *, reverse: bool) -> float:
    """iperf3 through the tunnel; a run iperf3 reports as failed (on a loaded machine its control connection can
    time out, or the server is still closing the last test) is run again, up to `IPERF_ATTEMPTS` times."""
    for attempt in range(1, IPERF_ATTEMPTS + 1):
        try:
            return iperf(host, WGGO_ADDRESS, seconds, reverse=reverse)
        except (KeyError, LabCommandError) as error:
            print(f"iperf3 failed ({error!r}), attempt {attempt} of {IPERF_ATTEMPTS}", file=sys.stderr)
            if attempt == IPERF_ATTEMPTS:
                raise
            time.sleep(1)  # let the iperf3 server finish with the failed test before the next one
    raise AssertionError("unreachable")


def dig_once(host: Netns, address: str) -> str | None:
    """One query to dmnc's server on the tunnel address, from the host namespace, with the lab's `dig`."""
    result = host.run(["dig", f"@{address}", "+short", "+time=2", "+tries=3", "web1.dmnc.internal"], check=False)
    return result.stdout.strip() or None


# --- report ---------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    serve_command = commands.add_parser("serve", help="internal: dmnc's DNS server on 127.0.0.1:PORT")
    serve_command.add_argument("port", type=int)
    serve_command.add_argument("cache_size", type=int)
    flood_command = commands.add_parser("flood", help="internal: the flood worker")
    flood_command.add_argument("target")
    flood_command.add_argument("rate", type=float)
    flood_command.add_argument("kind", choices=["repeated", "new"])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each part")
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 duration per measurement")
    parser.add_argument("--flood-rate", type=float, default=5000.0, help="flood queries/s, all sources together")
    parser.add_argument("--no-tunnel", action="store_true", help="skip part 3 (needs root and the lab tools)")
    parser.add_argument(
        "--json", type=Path, default=Path(tempfile.gettempdir()) / "bench_dns.json", help="where to write results"
    )
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.cache_size)
        return 0
    if args.command == "flood":
        flood(args.target, args.rate, args.kind)
        return 0

    report: dict[str, Any] = {"rounds": args.rounds, "cpus": os.cpu_count(), "kernel": os.uname().release}
    report["latency"] = latency(args.rounds)
    reference = report["latency"]["dnsmasq"]
    print(f"{'latency, low load':22} {'median us':>10} {'ratio':>6} {'p99 us':>9} {'ratio':>6}")
    for name, figures in report["latency"].items():
        print(
            f"{name:22} {figures['median_us']:10.1f} {figures['median_us'] / reference['median_us']:6.2f} "
            f"{figures['p99_us']:9.1f} {figures['p99_us'] / reference['p99_us']:6.2f}"
        )
    report["responder_cpu"] = responder_costs()
    costs = report["responder_cpu"]
    print(
        "responder CPU per answer: "
        + ", ".join(f"{name} {value:.1f}" for name, value in costs.items())
        + f"; full path / cache hit = {costs['full path us'] / costs['cache hit us']:.0f}x"
    )
    if not args.no_tunnel:
        report["flood_rate"] = args.flood_rate
        report["seconds"] = args.seconds
        report["tunnel"] = tunnel_during_flood(args.rounds, args.seconds, args.flood_rate)
        print(
            f"tunnel during a flood of {args.flood_rate:.0f} queries/s ({FLOOD_SOURCES} sources), medians "
            "(throughput: median and range of the per-round ratio to no flood):"
        )
        print("\n".join(flood_table(report["tunnel"])))
    report["load_average_at_end"] = os.getloadavg()
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.rounds} rounds; load average at the end {os.getloadavg()[0]:.1f}; JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
