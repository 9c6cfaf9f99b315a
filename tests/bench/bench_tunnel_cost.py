"""The tunnel's CPU cost per packet at a fixed offered load: dmnc now against dmnc at a git revision, in one run.

Throughput on a shared machine moves with everyone else's load; the CPU time dmnc spends per packet at a rate it
easily carries moves much less, so it shows a change to the data path that a throughput figure would drown. Both
topologies of bench_tunnel (dmnc <-> wireguard-go) stay up; each round runs iperf3 UDP at `--mbps` through each,
both directions, the order alternating per round, and reads dmnc's CPU time (utime + stime) around it. Prints the
medians in us per packet and their ratio, now / baseline. Run as root from the repository root:

    .venv/bin/python -m tests.bench.bench_tunnel_cost --baseline REV [--mbps 100] [--seconds 5] [--rounds 7]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys

from tests.bench.bench_tunnel import UDP_LENGTH, Setup, baseline_dmnc_setup, cost_per_packet_us, dmnc_setup


def setup_cost(setup: Setup, mbps: int, seconds: int, *, reverse: bool) -> float:
    assert setup.dmnc_pid is not None
    return cost_per_packet_us(
        setup.left, setup.right, setup.right_address, setup.dmnc_pid, mbps=mbps, seconds=seconds, reverse=reverse
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", required=True, help="the git revision to compare with")
    parser.add_argument("--mbps", type=int, default=100, help="offered UDP load, well below what dmnc carries")
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 duration per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="rounds, the order of the two alternating")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        now = stack.enter_context(dmnc_setup())
        base = stack.enter_context(baseline_dmnc_setup(args.baseline))
        costs: dict[tuple[str, bool], list[float]] = {(s.name, r): [] for s in (now, base) for r in (False, True)}
        for round_number in range(args.rounds):
            for setup in (now, base) if round_number % 2 == 0 else (base, now):
                for reverse in (False, True):
                    costs[setup.name, reverse].append(setup_cost(setup, args.mbps, args.seconds, reverse=reverse))
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    print(f"dmnc CPU us per {UDP_LENGTH}-byte UDP datagram at {args.mbps} Mbit/s, medians of {args.rounds} rounds")
    print(f"{'':10} {'now':>8} {args.baseline[:12]:>12} {'now/base':>9}")
    for reverse in (False, True):
        now_cost = statistics.median(costs[now.name, reverse])
        base_cost = statistics.median(costs[base.name, reverse])
        print(f"{'reverse' if reverse else 'forward':10} {now_cost:8.2f} {base_cost:12.2f} {now_cost / base_cost:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
