"""Where the tunnel's time goes: py-spy samples the real `dmnc wg up` while iperf3 drives TCP through it.

The topology of bench_tunnel (dmnc in one namespace, wireguard-go in the other, one veth). For each direction,
py-spy (`pip install py-spy`; not a dependency of dmnc) samples every thread of the dmnc process, idle ones
included, while iperf3 runs; the summary lists, per thread, the share of its samples each function holds itself
(self) and below it (total). "idle" frames (epoll_wait, a blocking queue get) show how much of the time a thread
waits. Run as root from the repository root:

    .venv/bin/python -m tests.bench.profile_tunnel [--seconds 10] [--top 15] [--udp-mbps N] [--native] [--raw DIR]
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.bench.bench_tunnel import iperf, iperf_server
from tests.integration.tunnel.peers import WGGO_ADDRESS, dmnc_and_wireguard_go
from tests.lab.netns import wait_for_ping

SAMPLES_PER_SECOND = 200
# A raw py-spy line: "frame;frame;...;frame COUNT", outermost first; frames read "function (file:line)".
_RAW_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_THREAD_FRAME = re.compile(r"^(?:thread|process) ")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


def function_name(frame: str) -> str:
    """`function (file.py)` without the line number, so one function's lines add up."""
    return re.sub(r":\d+\)$", ")", frame.strip())


def summarize(raw: str, top: int) -> str:
    """Per thread (the first frame py-spy's --threads adds): self and total share of each function."""
    by_thread: dict[str, tuple[collections.Counter[str], collections.Counter[str], list[int]]] = {}
    for line in raw.splitlines():
        match = _RAW_LINE.match(line)
        if match is None:
            continue
        frames = match["stack"].split(";")
        count = int(match["count"])
        thread = frames[0] if _THREAD_FRAME.match(frames[0]) else "?"
        functions = [function_name(frame) for frame in frames[1:] if not _THREAD_FRAME.match(frame)] or ["(none)"]
        own, below, total = by_thread.setdefault(thread, (collections.Counter(), collections.Counter(), [0]))
        total[0] += count
        own[functions[-1]] += count
        for name in set(functions):
            below[name] += count
    lines: list[str] = []
    for thread, (own, below, total) in sorted(by_thread.items(), key=lambda item: -item[1][2][0]):
        lines.append(f"{thread}: {total[0]} samples")
        lines.append(f"  {'self %':>7} {'total %':>8}  function")
        for name, count in own.most_common(top):
            lines.append(f"  {100 * count / total[0]:7.1f} {100 * below[name] / total[0]:8.1f}  {name}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="iperf3 and sampling duration per direction")
    parser.add_argument("--top", type=int, default=15, help="functions listed per thread")
    parser.add_argument("--udp-mbps", type=int, help="UDP at this rate instead of TCP as fast as it goes")
    parser.add_argument(
        "--native", action="store_true", help="include C frames (libsodium, syscalls); stops dmnc per sample"
    )
    parser.add_argument("--raw", type=Path, help="also keep py-spy's raw stacks in this directory")
    args = parser.parse_args()
    spy = py_spy()
    with dmnc_and_wireguard_go() as topology, tempfile.TemporaryDirectory() as scratch:
        if not wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5):
            raise RuntimeError("dmnc <-> wireguard-go: no ping through the tunnel")
        assert topology.dmnc.process is not None
        pid = topology.dmnc.process.pid
        with iperf_server(topology.right):
            for reverse in (False, True):
                direction = "reverse (wireguard-go sends, dmnc writes the TUN)" if reverse else "forward (dmnc sends)"
                output = Path(scratch) / f"{'reverse' if reverse else 'forward'}.txt"
                argv = [spy, "record", "--pid", str(pid), "--duration", str(args.seconds), "--rate"]
                argv += [str(SAMPLES_PER_SECOND), "--format", "raw", "--threads", "--idle", "--output", str(output)]
                # C frames need the process stopped per sample, which slows it; Python frames are read without.
                argv += ["--native"] if args.native else ["--nonblocking"]
                sampler = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    mbps = iperf(
                        topology.left,
                        WGGO_ADDRESS,
                        args.seconds,
                        reverse=reverse,
                        udp=args.udp_mbps is not None,
                        mbps=args.udp_mbps or 0,
                    )
                finally:
                    sampler.wait(timeout=args.seconds + 60)
                print(f"== {direction}: {mbps:.0f} Mbit/s while sampled")
                print(summarize(output.read_text(), args.top))
                if args.raw is not None:
                    args.raw.mkdir(parents=True, exist_ok=True)
                    shutil.copy(output, args.raw / output.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
