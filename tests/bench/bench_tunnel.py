"""Tunnel benchmark: dmnc <-> wireguard-go vs wireguard-go <-> wireguard-go vs the bare veth, in one run.

Same topology for all three (two namespaces, one veth): iperf3 TCP in both directions and ping RTT p50/p99, plus
the dmnc process's peak RSS and CPU use while it carries traffic. Prints a table with ratios to wireguard-go and
writes JSON. Run as root from the repository root:

    .venv/bin/python -m tests.bench.bench_tunnel [--seconds 10] [--rounds 3] [--json PATH] [--baseline REV]

Figures drift between runs and machines; compare the ratios of one run. `--baseline REV` adds a fourth topology
running dmnc from git revision REV (exported to a temporary directory), so a change to the data path is measured
before and after in the same run, interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.tunnel.peers import (
    DMNC_ADDRESS,
    REPOSITORY,
    WGGO_ADDRESS,
    WGGO_PORT,
    dmnc_and_wireguard_go,
)
from tests.lab.netns import Netns, stop_process, two_namespaces, wait_for_ping
from tests.lab.wggo import WgPeer, wg_genkey, wg_pubkey, wireguard_go

IPERF_PORT = 5201
# UDP payload that fits a 1420-byte tunnel MTU in IPv4 (1420 - 20 - 8 = 1392) without IP fragmentation.
UDP_LENGTH = 1300
PING_COUNT = 200
PING_INTERVAL = "0.01"  # seconds; below 0.2 needs root, which the benchmark has anyway
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcessUsage:
    cpu_seconds: float
    wall_seconds: float

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0


@dataclass
class Result:
    name: str
    forward_mbps: float  # left -> right (dmnc's side sends)
    reverse_mbps: float
    rtt_p50_ms: float
    rtt_p99_ms: float
    dmnc_peak_rss_mb: float | None = None
    dmnc_cpu_percent_forward: float | None = None
    dmnc_cpu_percent_reverse: float | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5) (utime, stime), counted after the ")" closing the command name.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


@contextlib.contextmanager
def iperf_server(namespace: Netns) -> Iterator[None]:
    server = namespace.popen(
        ["iperf3", "--server", "--port", str(IPERF_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(0.3)
    try:
        yield
    finally:
        stop_process(server)


def iperf(
    client: Netns, server_address: str, seconds: int, *, reverse: bool, udp: bool = False, mbps: int = 0
) -> float:
    """TCP (or UDP: `UDP_LENGTH`-byte datagrams at `mbps`, 0 unlimited) throughput in Mbit/s measured by the
    receiver."""
    argv = ["iperf3", "--client", server_address, "--port", str(IPERF_PORT), "--time", str(seconds), "--json"]
    if reverse:
        argv.append("--reverse")
    if udp:
        argv += ["--udp", "--bitrate", f"{mbps}M" if mbps else "0", "--length", str(UDP_LENGTH)]
    report = json.loads(client.run(argv, timeout=seconds + 30).stdout)
    bits_per_second: float = report["end"]["sum_received"]["bits_per_second"]
    return bits_per_second / 1e6


def cost_per_packet_us(
    client: Netns, server: Netns, server_address: str, pid: int, *, mbps: int, seconds: int, reverse: bool
) -> float:
    """CPU microseconds process `pid` (dmnc) spends per datagram delivered while iperf3 sends UDP at `mbps` one
    way: the data path's cost at a rate it easily carries, which other load on the machine moves less than speed."""
    with iperf_server(server):
        before = cpu_seconds(pid)
        delivered_mbps = iperf(client, server_address, seconds, reverse=reverse, udp=True, mbps=mbps)
        spent = cpu_seconds(pid) - before
    packets = delivered_mbps * 1e6 * seconds / (UDP_LENGTH * 8)
    return spent / packets * 1e6 if packets else float("nan")


def ping_rtts(client: Netns, address: str) -> tuple[float, float]:
    result = client.run(["ping", "-n", "-c", str(PING_COUNT), "-i", PING_INTERVAL, address], timeout=60)
    rtts = [float(match) for match in re.findall(r"time=([0-9.]+) ms", result.stdout)]
    if len(rtts) < PING_COUNT // 2:
        raise RuntimeError(f"only {len(rtts)} of {PING_COUNT} pings answered")
    percentiles = statistics.quantiles(rtts, n=100)
    return percentiles[49], percentiles[98]


@dataclass
class Setup:
    """One topology, up and verified: traffic goes from `left` to `right_address`."""

    name: str
    left: Netns
    right: Netns
    right_address: str
    dmnc_pid: int | None = None


@dataclass
class Sample:
    forward_mbps: float
    reverse_mbps: float
    rtt_p50_ms: float
    rtt_p99_ms: float
    cpu_percent_forward: float | None
    cpu_percent_reverse: float | None


def measure(setup: Setup, seconds: int) -> Sample:
    rates, usage = [], []
    with iperf_server(setup.right):
        for reverse in (False, True):
            before_cpu = cpu_seconds(setup.dmnc_pid) if setup.dmnc_pid is not None else 0.0
            started = time.monotonic()
            rates.append(iperf(setup.left, setup.right_address, seconds, reverse=reverse))
            if setup.dmnc_pid is not None:
                usage.append(ProcessUsage(cpu_seconds(setup.dmnc_pid) - before_cpu, time.monotonic() - started))
    p50, p99 = ping_rtts(setup.left, setup.right_address)
    cpu: list[float | None] = [entry.cpu_percent for entry in usage] or [None, None]
    return Sample(rates[0], rates[1], p50, p99, cpu[0], cpu[1])


def median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarize(setup: Setup, samples: list[Sample]) -> Result:
    """Medians over the rounds: other load on a shared machine comes and goes, a median shrugs off one bad round."""
    result = Result(
        setup.name,
        statistics.median(sample.forward_mbps for sample in samples),
        statistics.median(sample.reverse_mbps for sample in samples),
        statistics.median(sample.rtt_p50_ms for sample in samples),
        statistics.median(sample.rtt_p99_ms for sample in samples),
    )
    if setup.dmnc_pid is not None:
        result.dmnc_peak_rss_mb = peak_rss_mb(setup.dmnc_pid)
        result.dmnc_cpu_percent_forward = median([sample.cpu_percent_forward for sample in samples])
        result.dmnc_cpu_percent_reverse = median([sample.cpu_percent_reverse for sample in samples])
    result.samples = [asdict(sample) for sample in samples]
    return result


@contextlib.contextmanager
def veth_setup() -> Iterator[Setup]:
    with two_namespaces() as (left, right, link):
        yield Setup("veth", left, right, str(link.right_address.ip))


@contextlib.contextmanager
def wireguard_go_pair_setup() -> Iterator[Setup]:
    left_key, right_key = wg_genkey(), wg_genkey()
    with two_namespaces() as (left, right, link):
        left_peer = WgPeer(wg_pubkey(right_key), [f"{WGGO_ADDRESS}/32"], f"{link.right_address.ip}:{WGGO_PORT}")
        right_peer = WgPeer(wg_pubkey(left_key), [f"{DMNC_ADDRESS}/32"])
        with (
            wireguard_go(
                left, address=f"{DMNC_ADDRESS}/24", listen_port=51820, peers=[left_peer], private_key=left_key
            ),
            wireguard_go(
                right, address=f"{WGGO_ADDRESS}/24", listen_port=WGGO_PORT, peers=[right_peer], private_key=right_key
            ),
        ):
            if not wait_for_ping(left, WGGO_ADDRESS, timeout=5):
                raise RuntimeError("wireguard-go pair: no ping through the tunnel")
            yield Setup("wireguard-go<->wireguard-go", left, right, WGGO_ADDRESS)


@contextlib.contextmanager
def dmnc_setup(name: str = "dmnc<->wireguard-go", runner: list[str] | None = None) -> Iterator[Setup]:
    with dmnc_and_wireguard_go(dmnc_runner=runner) as topology:
        if not wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5):
            raise RuntimeError(f"{name}: no ping through the tunnel")
        assert topology.dmnc.process is not None
        yield Setup(name, topology.left, topology.right, WGGO_ADDRESS, topology.dmnc.process.pid)


@contextlib.contextmanager
def baseline_dmnc_setup(revision: str) -> Iterator[Setup]:
    """dmnc as of git `revision`: its package exported to a temporary directory, put first on sys.path."""
    with tempfile.TemporaryDirectory(prefix="dmnc-baseline-") as source:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", revision, "dmnc"], cwd=REPOSITORY, check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(source, filter="data")
        bootstrap = f"import runpy, sys; sys.path.insert(0, {source!r}); runpy.run_module('dmnc', run_name='__main__')"
        with dmnc_setup(f"dmnc@{revision}<->wireguard-go", [sys.executable, "-c", bootstrap]) as setup:
            yield setup


def cpu_seconds_per_gigabyte(cpu_percent: float | None, mbps: float) -> float | None:
    """dmnc's CPU time per GB carried: its cost, which other load on the machine changes less than its speed."""
    return None if cpu_percent is None or not mbps else cpu_percent / 100 * 8000 / mbps


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def table(results: list[Result]) -> str:
    reference = next(result for result in results if result.name.startswith("wireguard-go"))
    lines = [
        f"{'':30} {'fwd Mbit/s':>11} {'ratio':>6} {'rev Mbit/s':>11} {'ratio':>6} {'p50 ms':>7} {'ratio':>6} "
        f"{'p99 ms':>7} {'RSS MB':>7} {'CPU% f/r':>10} {'CPU s/GB f/r':>13}"
    ]
    for result in results:
        cpu = (
            f"{result.dmnc_cpu_percent_forward:.0f}/{result.dmnc_cpu_percent_reverse:.0f}"
            if result.dmnc_cpu_percent_forward is not None and result.dmnc_cpu_percent_reverse is not None
            else "-"
        )
        rss = f"{result.dmnc_peak_rss_mb:.1f}" if result.dmnc_peak_rss_mb is not None else "-"
        forward_cost = cpu_seconds_per_gigabyte(result.dmnc_cpu_percent_forward, result.forward_mbps)
        reverse_cost = cpu_seconds_per_gigabyte(result.dmnc_cpu_percent_reverse, result.reverse_mbps)
        cost = f"{forward_cost:.2f}/{reverse_cost:.2f}" if forward_cost and reverse_cost else "-"
        lines.append(
            f"{result.name:30} {result.forward_mbps:11.0f} {ratio(result.forward_mbps, reference.forward_mbps):>6} "
            f"{result.reverse_mbps:11.0f} {ratio(result.reverse_mbps, reference.reverse_mbps):>6} "
            f"{result.rtt_p50_ms:7.3f} {ratio(result.rtt_p50_ms, reference.rtt_p50_ms):>6} "
            f"{result.rtt_p99_ms:7.3f} {rss:>7} {cpu:>10} {cost:>13}"
        )
    return "\n".join(lines)


def write_round_samples(
    path: Path,
    *,
    seconds: int,
    rounds: int,
    samples: dict[str, dict[str, list[float]]],
    extra: dict[str, object] | None = None,
) -> None:
    """An interleaved-rounds benchmark's raw samples (by setup, then metric) as JSON, with the machine's load and
    whatever `extra` the benchmark adds."""
    report: dict[str, object] = {
        "seconds": seconds,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "samples": samples,
        **(extra or {}),
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


def rounds_arguments(
    description: str, *, seconds: int, rounds: int, json_name: str, baseline: bool = False
) -> argparse.Namespace:
    """The command line of an interleaved-rounds lab benchmark: --seconds, --rounds, --json (and --baseline)."""
    parser = argparse.ArgumentParser(description=description)
    if baseline:
        parser.add_argument("--baseline", metavar="REV", help="also measure dmnc as of this git revision")
    parser.add_argument("--seconds", type=int, default=seconds, help="iperf3 duration per measurement and round")
    parser.add_argument("--rounds", type=int, default=rounds, help="measurement rounds, topologies interleaved")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(tempfile.gettempdir()) / json_name,
        help=f"where to write the results (default: {json_name} in the temp directory, not the checkout)",
    )
    return parser.parse_args()


def main() -> int:
    args = rounds_arguments(__doc__.splitlines()[0], seconds=10, rounds=3, json_name="bench_tunnel.json", baseline=True)
    with contextlib.ExitStack() as stack:
        # All stay up for the whole run and are measured in turn, round after round, so a burst of other load on the
        # machine hits them alike instead of skewing one of them.
        setups = [stack.enter_context(factory()) for factory in (veth_setup, wireguard_go_pair_setup, dmnc_setup)]
        if args.baseline is not None:
            setups.append(stack.enter_context(baseline_dmnc_setup(args.baseline)))
        samples: dict[str, list[Sample]] = {setup.name: [] for setup in setups}
        for round_number in range(args.rounds):
            for setup in setups:
                samples[setup.name].append(measure(setup, args.seconds))
                print(f"round {round_number + 1}/{args.rounds}: {setup.name} done", file=sys.stderr)
        results = [summarize(setup, samples[setup.name]) for setup in setups]
    report: dict[str, Any] = {
        "baseline": args.baseline,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
        "load_average_at_end": os.getloadavg(),
        "results": [asdict(result) for result in results],
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"medians of {args.rounds} rounds; load average at the end {os.getloadavg()[0]:.1f}; JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
