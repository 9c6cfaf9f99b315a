"""Exec a program inside `ip netns exec` with the cgroup hierarchies container engines need.

Usage: ip netns exec NS python netns_cgroups_exec.py [--private-tmpfs DIR]... -- PROGRAM [ARGS...]

`ip netns exec` gives the program a private mount namespace with a fresh /sys, which has no cgroup mounts, and dockerd
then refuses to start ("Devices cgroup isn't mounted"). This mounts, in that private mount namespace only, a tmpfs on
/sys/fs/cgroup, every cgroup v1 controller the host offers, the named systemd hierarchy and cgroup2 at `unified`
(the layout of a Debian host with the legacy hierarchy), then replaces itself with PROGRAM. No shell is involved: the
arguments go to execv unchanged.

`--private-tmpfs DIR` hides a host directory behind an empty tmpfs in that mount namespace, for engines that put
state in fixed global places (Podman names its container network namespaces in /run/netns and leaves them behind
when killed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The cgroup v1 controllers mounted on the lab host (see `mount | grep cgroup`), each its own hierarchy.
CGROUP_V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")


def available_v1_controllers() -> list[str]:
    """The controllers of CGROUP_V1_CONTROLLERS this kernel has enabled (/proc/cgroups, column 4)."""
    enabled: set[str] = set()
    for line in Path("/proc/cgroups").read_text().splitlines():
        if line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) >= 4 and fields[3] == "1":
            enabled.add(fields[0])
    return [name for name in CGROUP_V1_CONTROLLERS if name in enabled]


def mount(fstype: str, source: str, target: Path, options: str | None = None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", fstype]
    if options is not None:
        command += ["-o", options]
    subprocess.run([*command, source, str(target)], check=True)


def mount_cgroups() -> None:
    mount("tmpfs", "cgroup_root", CGROUP_ROOT, "mode=755")
    for controller in available_v1_controllers():
        mount("cgroup", "cgroup", CGROUP_ROOT / controller, controller)
    mount("cgroup", "cgroup", CGROUP_ROOT / "systemd", "none,name=systemd")
    mount("cgroup2", "cgroup2", CGROUP_ROOT / "unified")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--private-tmpfs", action="append", default=[], type=Path, metavar="DIR")
    parser.add_argument("program", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    program: list[str] = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not program:
        parser.error("PROGRAM missing")
    mount_cgroups()
    for directory in args.private_tmpfs:
        mount("tmpfs", "dmnc_private", directory, "mode=755")
    os.execvp(program[0], program)  # noqa: S606  (no shell on purpose: argv goes to the program unchanged)


if __name__ == "__main__":
    main(sys.argv[1:])
