"""`dmnc status` as a user runs it: a subprocess against a real control socket served in this test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from dmnc.control import serve_control_socket
from tests.integration.control.helpers import (
    DMNC,
    PROCESS_TIMEOUT_S,
    SNAPSHOT,
    FakeSource,
    Served,
    admin_group_name,
    dmnc_as_nobody,
    make_shared_dir,
    run_dmnc,
    wait_for_subscribers,
)

pytestmark = pytest.mark.lab


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    with make_shared_dir() as directory:
        yield directory


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
    return await run_dmnc("status", *arguments, **options)


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
    assert printed["routes"] == [
        {"subnet": "172.17.0.0/16", "network": "bridge", "installed": True, "reason": None, "decision": "routed"}
    ]


async def test_control_socket_from_environment(served: Served) -> None:
    result = await dmnc_status("--json", env={**os.environ, "DMNC_CONTROL_SOCKET": str(served.path)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == "0.1.0"


async def read_lines(stream: trio.abc.ReceiveStream, count: int) -> list[str]:
    buffer = b""
    with trio.fail_after(PROCESS_TIMEOUT_S):
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
        with trio.fail_after(PROCESS_TIMEOUT_S):
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


async def test_permission_denied_names_the_group_to_join(served: Served) -> None:
    group = admin_group_name()
    result = await dmnc_as_nobody("status", "--control-socket", str(served.path))
    assert result.returncode == 4
    assert result.stderr == (
        f"dmnc status: permission denied on {served.path}: only root and dmnc's admin group may read dmnc's "
        f"status; run it with sudo, or add yourself to group '{group}' (then log in again)\n"
    )


async def test_status_needs_no_root_for_admin_group_members(served: Served) -> None:
    group = admin_group_name()
    result = await dmnc_as_nobody("status", "--json", "--control-socket", str(served.path), extra_groups=(group,))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == SNAPSHOT.to_json_object()


async def test_follow_ends_quietly_when_its_reader_goes_away(served: Served) -> None:
    arguments = [*DMNC, "status", "--follow", "--control-socket", str(served.path)]
    async with trio.open_nursery() as nursery:
        follower: trio.Process = await nursery.start(
            partial(trio.run_process, arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        )
        assert follower.stdout is not None
        assert follower.stderr is not None
        await wait_for_subscribers(served.source, 1)
        served.source.events.emit("test.first", "first")
        await read_lines(follower.stdout, 1)
        await follower.stdout.aclose()  # like `| head -1` exiting
        served.source.events.emit("test.second", "second")
        with trio.fail_after(PROCESS_TIMEOUT_S):
            exit_code = await follower.wait()
        stderr = (await follower.stderr.receive_some(65536)).decode()
    assert exit_code == 0, stderr
    assert stderr == ""


async def test_follow_stops_on_ctrl_c_without_a_traceback(served: Served) -> None:
    arguments = [*DMNC, "status", "--follow", "--control-socket", str(served.path)]
    async with trio.open_nursery() as nursery:
        follower: trio.Process = await nursery.start(
            partial(trio.run_process, arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        )
        assert follower.stderr is not None
        await wait_for_subscribers(served.source, 1)
        follower.send_signal(signal.SIGINT)
        with trio.fail_after(PROCESS_TIMEOUT_S):
            exit_code = await follower.wait()
        stderr = (await follower.stderr.receive_some(65536)).decode()
    assert exit_code == 130, stderr
    assert "Traceback" not in stderr
    await wait_for_subscribers(served.source, 0)
