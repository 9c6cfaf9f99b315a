"""Whole-path benchmark: host -> container by IP through the real `dmnc run`, tunnel and direct path, against the
VM namespace's own transfer to the same container as the limit, in one run.

The service lab (tests/lab/service_lab.py) with an iperf3 server container on Docker's default bridge. Each round
measures, in turn, the limit (iperf3 from the VM namespace), then the path of the dmnc running at the time; dmnc
runs once with `--path tunnel`, once with `--path auto` (which goes direct in this lab). iperf3 TCP, forward (the
host sends) and reverse. Prints medians and their ratio to the limit of the same rounds, and writes JSON. Run as root
from the repository root:

    .venv/bin/python -m tests.bench.bench_whole_path [--seconds 5] [--rounds 3] [--json PATH]

Figures drift between runs and machines; compare the ratios of one run.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.bench.bench_tunnel import IPERF_PORT, rounds_arguments
from tests.lab.dockerd import BUSYBOX_PATH, import_image, rootfs_tar
from tests.lab.netns import Netns
from tests.lab.service_lab import ServiceLab, new_service_lab, running_dmnc, status_json
from tests.lab.setup_image import shared_libraries
from tests.lab.wait import wait_until

IPERF_IMAGE = "dmnc-lab-iperf3:latest"
READY_TIMEOUT_S = 60.0
# The container's iperf3 server takes one test at a time and is busy for a moment after each.
IPERF_ATTEMPTS = 5


def iperf(client: Netns, server_address: str, seconds: int, *, reverse: bool) -> float:
    """TCP throughput in Mbit/s measured by the receiver; retried while the server says it is busy."""
    argv = ["iperf3", "--client", server_address, "--port", str(IPERF_PORT), "--time", str(seconds), "--json"]
    if reverse:
        argv.append("--reverse")
    report: dict[str, Any] = {}
    for _attempt in range(IPERF_ATTEMPTS):
        report = json.loads(client.run(argv, timeout=seconds + 30, check=False).stdout or "{}")
        if "error" not in report and report:
            bits_per_second: float = report["end"]["sum_received"]["bits_per_second"]
            return bits_per_second / 1e6
        time.sleep(1)  # a retry after the server said it is busy (bench only: no assertion waits on this)
    raise RuntimeError(f"iperf3 to {server_address} failed: {report.get('error')}")


@dataclass
class PathResult:
    name: str
    forward_mbps: float
    reverse_mbps: float
    limit_forward_mbps: float  # the VM namespace's own transfer, medians of the same rounds
    limit_reverse_mbps: float

    @property
    def forward_ratio(self) -> float:
        return self.forward_mbps / self.limit_forward_mbps

    @property
    def reverse_ratio(self) -> float:
        return self.reverse_mbps / self.limit_reverse_mbps


def iperf3_rootfs() -> bytes:
    """iperf3 and the libraries `ldd` lists for it, plus busybox for a shell."""
    found = shutil.which("iperf3")
    if found is None:
        raise RuntimeError("iperf3 is not installed (tests/lab/install.sh installs it)")
    binary = Path(found).resolve()
    files: dict[str, Path | bytes] = {"/usr/bin/iperf3": binary, "/bin/busybox": BUSYBOX_PATH}
    for library in shared_libraries(binary):
        files[library] = Path(library).resolve()
    return rootfs_tar(files, {"/bin/sh": "busybox"})


def start_iperf_server(lab: ServiceLab) -> str:
    """An iperf3 server container on the default bridge; returns its IPv4 address."""
    import_image(lab.engine.socket_path, iperf3_rootfs(), IPERF_IMAGE)
    body = {"Image": IPERF_IMAGE, "Cmd": ["/usr/bin/iperf3", "--server", "--port", str(IPERF_PORT)]}
    created = lab.engine_request("POST", "/containers/create", json=body).json()
    lab.engine_request("POST", f"/containers/{created['Id']}/start")
    settings = lab.engine_request("GET", f"/containers/{created['Id']}/json").json()["NetworkSettings"]
    return str(settings["Networks"]["bridge"]["IPAddress"])


def answers(namespace: Netns, address: str) -> bool:
    return namespace.run(["ping", "-n", "-q", "-c", "1", "-W", "1", address], check=False).returncode == 0


def ipv4_path(lab: ServiceLab) -> str:
    paths: list[dict[str, Any]] = status_json(lab).get("paths", [])
    return next((str(path["path"]) for path in paths if path["family"] == "ipv4"), "unknown")


def measure_path(lab: ServiceLab, name: str, option: str, container: str, *, seconds: int, rounds: int) -> PathResult:
    forward, reverse, limit_forward, limit_reverse = [], [], [], []
    expected = "tunnel" if option == "tunnel" else "direct"
    with running_dmnc(lab, "--path", option) as dmnc:
        wait_until(lambda: answers(lab.host, container), READY_TIMEOUT_S, "the container answers the host")
        wait_until(lambda: ipv4_path(lab) == expected, READY_TIMEOUT_S, f"the {expected} path")
        for round_number in range(rounds):
            limit_forward.append(iperf(lab.vm, container, seconds, reverse=False))
            limit_reverse.append(iperf(lab.vm, container, seconds, reverse=True))
            forward.append(iperf(lab.host, container, seconds, reverse=False))
            reverse.append(iperf(lab.host, container, seconds, reverse=True))
            print(f"{name}: round {round_number + 1}/{rounds} done", file=sys.stderr)
        dmnc.stop()
    return PathResult(
        name,
        statistics.median(forward),
        statistics.median(reverse),
        statistics.median(limit_forward),
        statistics.median(limit_reverse),
    )


def table(results: list[PathResult]) -> str:
    lines = [f"{'':22} {'fwd Mbit/s':>11} {'of limit':>9} {'rev Mbit/s':>11} {'of limit':>9} {'limit f/r':>14}"]
    for result in results:
        limit = f"{result.limit_forward_mbps:.0f}/{result.limit_reverse_mbps:.0f}"
        lines.append(
            f"{result.name:22} {result.forward_mbps:11.0f} {result.forward_ratio:9.2f} "
            f"{result.reverse_mbps:11.0f} {result.reverse_ratio:9.2f} {limit:>14}"
        )
    return "\n".join(lines)


def main() -> int:
    args = rounds_arguments(__doc__.splitlines()[0], seconds=5, rounds=3, json_name="bench_whole_path.json")
    with new_service_lab() as lab:
        container = start_iperf_server(lab)
        results = [
            measure_path(lab, "tunnel (--path tunnel)", "tunnel", container, seconds=args.seconds, rounds=args.rounds),
            measure_path(lab, "direct (--path auto)", "auto", container, seconds=args.seconds, rounds=args.rounds),
        ]
    report: dict[str, Any] = {
        "seconds": args.seconds,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
        "load_average_at_end": os.getloadavg(),
        "results": [
            {**asdict(result), "forward_ratio": result.forward_ratio, "reverse_ratio": result.reverse_ratio}
            for result in results
        ],
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"medians of {args.rounds} rounds; load average at the end {os.getloadavg()[0]:.1f}; JSON in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
