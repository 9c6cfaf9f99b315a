"""Size and start-up time of the frozen dmnc binary, onefile versus onedir.

Run: .venv/bin/python tests/bench/bench_binary.py [--runs N] [--out DIR [--no-build]] [--drop-caches]
(not collected by pytest). Builds both modes with build/build_binary.sh (into a temporary directory unless --out
names one), then times `dmnc version` as a fresh process N times per mode, next to `python -m dmnc version` from
the source tree. Targets (issue 8): binary <= 25 MB, start <= 0.5 s.

A onefile binary unpacks its libraries into a new temporary directory at every start; onedir starts from files
already on disk. By default the page cache is warm (the usual case after the first start); --drop-caches (Linux,
root) empties it before every run to time a truly cold start, at the cost of slowing the whole machine briefly.
Shared machines are noisy: the minimum is the figure that compares, the median shows the spread.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIZE_TARGET_BYTES = 25 * 1000 * 1000
START_TARGET_S = 0.5
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def executable_in(out: Path, mode: str) -> Path:
    return out / "dist-onefile" / "dmnc" if mode == "onefile" else out / "dist-onedir" / "dmnc" / "dmnc"


def build(mode: str, out: Path) -> Path:
    subprocess.run(
        [str(REPO / "build" / "build_binary.sh"), mode],
        env={**os.environ, "DMNC_BUILD_OUT": str(out), "DMNC_BUILD_VENVS": str(REPO / "tests" / ".cache")},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return executable_in(out, mode)


def size_bytes(executable: Path, mode: str) -> int:
    if mode == "onefile":
        return executable.stat().st_size
    return sum(path.stat().st_size for path in executable.parent.rglob("*") if path.is_file())


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_times(command: list[str], runs: int, *, drop_caches: bool) -> tuple[list[float], list[float]]:
    """Wall-clock seconds and CPU seconds (user + system) of each start. On a busy machine the wall clock mostly
    measures waiting for a core; the CPU time is what the start itself costs."""
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        if drop_caches:
            os.sync()
            DROP_CACHES.write_text("3\n")
        cpu_before = children_cpu_s()
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall.append(time.perf_counter() - started)
        cpu.append(children_cpu_s() - cpu_before)
    return wall, cpu


def verdict(value: float, target: float) -> str:
    return "meets target" if value <= target else "MISSES target"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="starts timed per binary (default 15)")
    parser.add_argument("--out", type=Path, help="build directory to use and keep (default: a temporary one)")
    parser.add_argument("--no-build", action="store_true", help="time the binaries already in --out")
    parser.add_argument("--drop-caches", action="store_true", help="empty the page cache before each start (root)")
    args = parser.parse_args()
    if args.drop_caches and not os.access(DROP_CACHES, os.W_OK):
        print(f"--drop-caches needs root on Linux ({DROP_CACHES})", file=sys.stderr)
        return 2
    if args.no_build and args.out is None:
        print("--no-build needs --out DIR", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="dmnc-bench-") as temporary:
        out = args.out or Path(temporary)
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        header = f"{'':22} {'size':>9} {'wall min':>9} {'median':>7} {'max':>7} {'cpu min':>8} {'median':>7}"
        print(f"{header}   ({args.runs} starts each)")
        rows: list[tuple[str, list[str], int | None]] = []
        for mode in ("onefile", "onedir"):
            if args.no_build:
                executable = executable_in(out, mode)
                if not executable.is_file():
                    print(f"--no-build: no {mode} build at {executable}", file=sys.stderr)
                    return 2
            else:
                started = time.perf_counter()
                executable = build(mode, out)
                print(f"built {mode} in {time.perf_counter() - started:.0f} s")
            rows.append((mode, [str(executable), "version"], size_bytes(executable, mode)))
        rows.append(("source (python -m)", [sys.executable, "-m", "dmnc", "version"], None))
        for label, command, size in rows:
            wall, cpu = start_times(command, args.runs, drop_caches=args.drop_caches)
            shown_size = "" if size is None else f"{size / 1e6:.1f} MB"
            print(
                f"{label:22} {shown_size:>9} {min(wall):8.3f}s {statistics.median(wall):6.3f}s {max(wall):6.3f}s"
                f" {min(cpu):7.3f}s {statistics.median(cpu):6.3f}s",
                end="",
            )
            if size is not None:
                start = verdict(statistics.median(wall), START_TARGET_S)
                print(f"   size {verdict(size, SIZE_TARGET_BYTES)}, start (median wall) {start}", end="")
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
