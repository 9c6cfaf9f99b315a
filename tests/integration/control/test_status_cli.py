"""`dmnc status` as a user runs it: a subprocess against a real control socket served in this test."""

from __future__ import annotations

import grp
import json
import os
import shutil
import site
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from dmnc.control import admin_group_id, serve_control_socket
from tests.conftest import require_lab, require_root
from tests.integration.control.test_control_socket import SNAPSHOT, FakeSource, Served, wait_for_subscribers

pytestmark = pytest.mark.lab

DMNC = [sys.executable, "-m", "dmnc"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="dmnc-control-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
async def served(shared_dir: Path, nursery: trio.Nursery) -> AsyncIterator[Served]:
    """The service side with the production defaults (admin group, mode 0660)."""
    source = FakeSource()
    scope = trio.CancelScope()
    path = shared_dir / "dmnc.sock"

    async def serve(task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await serve_control_socket(path, source, task_status=task_status)

    await nursery.start(serve)
    yield Served(path, source, scope)
    scope.cancel()


async def dmnc_status(*arguments: str, **options: Any) -> subprocess.CompletedProcess[str]:
    with trio.fail_after(30):
        result = await trio.run_process(
            [*DMNC, "status", *arguments], capture_stdout=True, capture_stderr=True, check=False, **options
        )
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


async def test_status_prints_a_readable_summary(served: Served) -> None:
    result = await dmnc_status("--control-socket", str(served.path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "dmnc 0.1.0"
    assert "  interface        utun4" in lines
    assert "  peer endpoint    192.168.65.3:51820" in lines
    assert "  last handshake   3 s ago" in lines
    assert "  received         4.0 KiB" in lines
    assert "  dropped packets  replay 2" in lines
    assert "  runtime          Docker Engine" in lines
    assert "  setup            kernel" in lines
    assert lines[-2:] == ["  SUBNET         NETWORK  INSTALLED", "  172.17.0.0/16  bridge   yes"]
    assert "Traceback" not in result.stderr


async def test_status_json_is_one_object_with_the_contract_fields(served: Served) -> None:
    result = await dmnc_status("--json", "--control-socket", str(served.path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    printed = json.loads(result.stdout)
    assert printed == SNAPSHOT.to_json_object()
    assert printed["tunnel"]["last_handshake_age_s"] == 3.0
    assert printed["routes"] == [{"subnet": "172.17.0.0/16", "network": "bridge", "installed": True}]


async def test_control_socket_from_environment(served: Served) -> None:
    result = await dmnc_status("--json", env={**os.environ, "DMNC_CONTROL_SOCKET": str(served.path)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == "0.1.0"


async def read_lines(stream: trio.abc.ReceiveStream, count: int) -> list[str]:
    buffer = b""
    with trio.fail_after(20):
        while buffer.count(b"\n") < count:
            chunk = await stream.receive_some(4096)
            assert chunk, f"output ended early: {buffer!r}"
            buffer += chunk
    return buffer.decode().splitlines()


@pytest.mark.parametrize("as_json", [False, True])
async def test_follow_prints_events_as_they_come_until_dmnc_stops(served: Served, as_json: bool) -> None:
    arguments = [*DMNC, "status", "--follow", "--control-socket", str(served.path), *(["--json"] if as_json else [])]
    async with trio.open_nursery() as nursery:
        follower: trio.Process = await nursery.start(
            partial(trio.run_process, arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        )
        assert follower.stdout is not None
        assert follower.stderr is not None
        await wait_for_subscribers(served.source, 1)
        served.source.events.emit("docker.connected", "connected to Docker Engine (API 1.41)", api_version="1.41")
        first = await read_lines(follower.stdout, 1)
        served.source.events.emit("route.installed", "172.17.0.0/16 (bridge) via utun4")
        second = await read_lines(follower.stdout, 1)
        served.scope.cancel()
        with trio.fail_after(20):
            exit_code = await follower.wait()
        stderr = (await follower.stderr.receive_some(65536)).decode()
    assert exit_code == 0, stderr
    assert "dmnc stopped; the event feed ended" in stderr
    if as_json:
        assert json.loads(first[0])["kind"] == "docker.connected"
        assert json.loads(first[0])["details"] == {"api_version": "1.41"}
        assert json.loads(second[0])["message"] == "172.17.0.0/16 (bridge) via utun4"
    else:
        assert first[0].endswith('docker.connected       connected to Docker Engine (API 1.41) (api_version="1.41")')
        assert second[0].endswith("route.installed        172.17.0.0/16 (bridge) via utun4")


async def test_missing_socket_says_dmnc_is_not_running(shared_dir: Path) -> None:
    path = shared_dir / "absent.sock"
    result = await dmnc_status("--control-socket", str(path))
    assert result.returncode == 3
    assert result.stderr == f"dmnc status: dmnc is not running (no control socket at {path})\n"
    assert result.stdout == ""


async def test_stale_socket_says_dmnc_is_not_running(shared_dir: Path) -> None:
    path = shared_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    for arguments in (["--json"], ["--follow"]):
        result = await dmnc_status(*arguments, "--control-socket", str(path))
        assert result.returncode == 3
        assert result.stderr == (
            f"dmnc status: dmnc is not running (nothing answers on {path}; a stopped dmnc left it)\n"
        )


async def test_bad_control_socket_value_is_a_config_error() -> None:
    result = await dmnc_status(env={**os.environ, "DMNC_CONTROL_SOCKET": "/" + "x" * 200})
    assert result.returncode == 2
    assert result.stderr.startswith("dmnc status: DMNC_CONTROL_SOCKET: '/xxxx")
    assert "is longer than the 107 bytes a Unix socket allows" in result.stderr


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
    repository = Path(__file__).resolve().parents[3]
    search_path = [str(repository), *site.getsitepackages()]
    return {
        "user": "nobody",
        "group": "nogroup",
        "extra_groups": list(extra_groups),
        "cwd": "/",
        "env": {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(search_path)},
    }


async def dmnc_status_as_nobody(
    *arguments: str, extra_groups: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    with trio.fail_after(30):
        result = await trio.run_process(
            [*dmnc_for_other_users(), "status", *arguments],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            **nobody_options(*extra_groups),
        )
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


def admin_group_name() -> str:
    require_root()
    group_id = admin_group_id()
    require_lab(group_id is not None, "an admin group (admin, wheel or sudo) on this machine")
    assert group_id is not None
    return grp.getgrgid(group_id).gr_name


async def test_permission_denied_names_the_group_to_join(served: Served) -> None:
    group = admin_group_name()
    result = await dmnc_status_as_nobody("--control-socket", str(served.path))
    assert result.returncode == 4
    assert result.stderr == (
        f"dmnc status: permission denied on {served.path}: only root and dmnc's admin group may read dmnc's "
        f"status; run it with sudo, or add yourself to group '{group}' (then log in again)\n"
    )


async def test_status_needs_no_root_for_admin_group_members(served: Served) -> None:
    group = admin_group_name()
    result = await dmnc_status_as_nobody("--json", "--control-socket", str(served.path), extra_groups=(group,))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == SNAPSHOT.to_json_object()
