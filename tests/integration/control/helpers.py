"""Shared pieces of the control socket tests: a fake service state and running commands as another user."""

from __future__ import annotations

import base64
import contextlib
import grp
import ipaddress
import os
import pwd
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from dmnc.control import EventBroadcaster, admin_group_id
from dmnc.control.messages import DockerStatus, RouteStatus, StatusSnapshot, TunnelStatus, VmStatus
from tests.conftest import require_lab, require_root

DMNC = [sys.executable, "-m", "dmnc"]

SNAPSHOT = StatusSnapshot(
    version="0.1.0",
    tunnel=TunnelStatus(
        interface="utun4",
        listen="0.0.0.0:3333",
        last_handshake_age_s=3.0,
        endpoint="192.168.65.3:51820",
        rx_bytes=4096,
        tx_bytes=8192,
        drops={"replay": 2},
    ),
    docker=DockerStatus(
        host="unix:///var/run/docker.sock", runtime="Docker Engine", api_version="1.41", connected=True
    ),
    vm=VmStatus(mode="kernel", public_key=base64.b64encode(bytes(32)).decode()),
    routes=(RouteStatus(ipaddress.ip_network("172.17.0.0/16"), "bridge", installed=True, decision="routed"),),
)


@dataclass
class FakeSource:
    current: StatusSnapshot = SNAPSHOT
    events: EventBroadcaster = field(default_factory=EventBroadcaster)
    snapshots_served: int = 0

    def snapshot(self) -> StatusSnapshot:
        self.snapshots_served += 1
        return self.current


@dataclass
class Served:
    path: Path
    source: FakeSource
    scope: trio.CancelScope


# Bounds on waiting for other processes: generous, since a loaded test machine starts Python slowly; they only
# turn a hang into a failure and time nothing.
PROCESS_TIMEOUT_S = 30


async def wait_for_subscribers(source: FakeSource, count: int) -> None:
    with trio.fail_after(PROCESS_TIMEOUT_S):
        while source.events.subscriber_count != count:
            await trio.sleep(0.01)


@contextlib.contextmanager
def make_shared_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="dmnc-control-"))
    try:
        directory.chmod(0o755)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def usable_by_everyone(path: Path) -> bool:
    """Whether any user may run `path`: world-executable, in directories anyone may traverse."""
    return all(os.stat(part).st_mode & 0o001 for part in [path, *path.parents])


def dmnc_for_other_users() -> list[str]:
    """`python -m dmnc` that another user can run: this interpreter, or the system's of the same version.

    The venv's interpreter may live under a private home directory (/root); the system Python of the same minor
    version can load the same package and site-packages.
    """
    candidates = [
        Path(sys.executable).resolve(),
        Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"),
    ]
    usable = [candidate for candidate in candidates if candidate.exists() and usable_by_everyone(candidate)]
    require_lab(bool(usable), "a Python interpreter of this version that user nobody may run")
    return [str(usable[0]), "-m", "dmnc"]


def nobody_options(*extra_groups: str) -> dict[str, Any]:
    require_root()
    known_users = {user.pw_name: user for user in pwd.getpwall()}
    require_lab("nobody" in known_users, "the user nobody")
    nobody = known_users["nobody"]
    repository = Path(__file__).resolve().parents[3]
    search_path = [str(repository), *site.getsitepackages()]
    return {
        "user": nobody.pw_uid,
        "group": nobody.pw_gid,
        "extra_groups": list(extra_groups),
        "cwd": "/",
        "env": {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(search_path)},
    }


async def run_dmnc(*arguments: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """`dmnc ARGUMENTS` as a subprocess (options go to trio.run_process), its output decoded."""
    command = options.pop("command", DMNC)
    with trio.fail_after(PROCESS_TIMEOUT_S):
        result = await trio.run_process(
            [*command, *arguments], capture_stdout=True, capture_stderr=True, check=False, **options
        )
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


async def dmnc_as_nobody(*arguments: str, extra_groups: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`dmnc ARGUMENTS` as user nobody (plus `extra_groups`), to check what works without root."""
    return await run_dmnc(*arguments, command=dmnc_for_other_users(), **nobody_options(*extra_groups))


def admin_group_name() -> str:
    require_root()
    group_id = admin_group_id()
    require_lab(group_id is not None, "an admin group (admin, wheel or sudo) on this machine")
    assert group_id is not None
    return grp.getgrgid(group_id).gr_name
