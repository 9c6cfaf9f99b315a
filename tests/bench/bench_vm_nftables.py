"""What dmnc's nftables table costs on the VM side, against the iptables-only path, in one run (issue 15, part 2).

One topology (tests/integration/vm/test_ipv6_vm_side.py's lab: `dmnc wg up` in a "host" namespace, the real setup
script's userspace VM side, a "container" namespace behind a bridge in the VM), measured in two states that
alternate from round to round, the order swapped each round so drift in the machine's load hits both alike:
- iptables: no nftables table in the VM, dmnc's iptables rules only (Docker's iptables backend);
- nftables: Docker 29's drops emulated for the container's bridge with an accepted mark (as in
  tests/integration/service/test_docker_nftables.py) and dmnc's table `inet dmnc` as the setup script wrote it.
iperf3 TCP host->container throughput and ping RTT; prints the medians and their ratio, nftables / iptables. Run as
root from the repository root:

    .venv/bin/python -m tests.bench.bench_vm_nftables [--seconds 5] [--rounds 5] [--json PATH]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from tests.bench.bench_tunnel import iperf, iperf_server, ping_rtts, rounds_arguments, write_round_samples
from tests.integration.vm.containerlab import CONTAINER_ADDRESS
from tests.integration.vm.test_ipv6_vm_side import Lab, open_lab, start_vm_side, stop_vm_side
from tests.lab.docker_nftables import docker_rules
from tests.lab.netns import wait_for_ping

STATES = ("iptables", "nftables")
METRICS = ("TCP host->container Mbit/s", "ping p50 ms", "ping p99 ms")
PING_TIMEOUT_S = 20.0


def container_bridge(lab: Lab) -> str:
    """The bridge the lab's container hangs off (the only bridge in the VM namespace)."""
    (line,) = lab.vm.run(["ip", "-o", "link", "show", "type", "bridge"]).stdout.splitlines()
    return line.split(":")[1].strip()


def load(lab: Lab, path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    lab.vm.run(["nft", "-f", str(path)])


def set_state(lab: Lab, state: str, work: Path, docker: str, dmnc: str) -> None:
    for table in ("ip docker-bridges", "inet dmnc"):
        lab.vm.run(["nft", "delete", "table", *table.split()], check=False)
    if state == "nftables":
        load(lab, work / "docker.nft", docker)
        load(lab, work / "dmnc.nft", dmnc)


def measure(lab: Lab, seconds: int) -> dict[str, float]:
    p50, p99 = ping_rtts(lab.host, CONTAINER_ADDRESS)
    with iperf_server(lab.container):
        throughput = iperf(lab.host, CONTAINER_ADDRESS, seconds, reverse=False)
    return {METRICS[0]: throughput, METRICS[1]: p50, METRICS[2]: p99}


def main() -> int:
    args = rounds_arguments(__doc__.splitlines()[0], seconds=5, rounds=5, json_name="bench_vm_nftables.json")
    samples: dict[str, dict[str, list[float]]] = {state: {metric: [] for metric in METRICS} for state in STATES}
    with tempfile.TemporaryDirectory(prefix="dmnc-bench-nft-") as directory, open_lab(Path(directory)) as lab:
        work = Path(directory)
        docker = docker_rules(container_bridge(lab), accept_mark=True)
        load(lab, work / "docker.nft", docker)
        start_vm_side(lab)
        try:
            # dmnc's table exactly as the setup script made it for these Docker rules.
            dmnc = lab.vm.run(["nft", "list", "table", "inet", "dmnc"]).stdout
            if "meta mark set" not in dmnc:
                raise RuntimeError(f"the setup script set no mark:\n{dmnc}")
            if not wait_for_ping(lab.host, CONTAINER_ADDRESS, timeout=PING_TIMEOUT_S):
                raise RuntimeError("the host does not reach the container through the tunnel")
            for round_number in range(args.rounds):
                order = STATES if round_number % 2 == 0 else STATES[::-1]
                for state in order:
                    set_state(lab, state, work, docker, dmnc)
                    for metric, value in measure(lab, args.seconds).items():
                        samples[state][metric].append(value)
                print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            stop_vm_side(lab)
    write_round_samples(args.json, seconds=args.seconds, rounds=args.rounds, samples=samples)
    print(f"{'metric':28} {'iptables':>10} {'nftables':>10} {'ratio':>7}")
    for metric in METRICS:
        off, on = statistics.median(samples["iptables"][metric]), statistics.median(samples["nftables"][metric])
        print(f"{metric:28} {off:10.3f} {on:10.3f} {on / off if off else float('nan'):7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
