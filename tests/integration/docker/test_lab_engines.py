"""The lab engine fixture itself (tests/lab/dockerd.py): teardown leaves nothing behind, even after a crash."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio

from dmnc.docker.client import ContainerSpec, DockerClient
from tests.integration.docker.conftest import require_engine
from tests.lab.dockerd import BUSYBOX_REFERENCE, CGROUP_ROOT, import_busybox_image, running_dockerd, running_podman

pytestmark = pytest.mark.lab


def process_running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan stays a zombie until PID 1 reaps it; it is dead all the same)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def start_sleeper(socket_path: Path) -> tuple[str, int]:
    """A container that would run for an hour: its ID and host PID."""
    async with DockerClient.connect(f"unix://{socket_path}") as docker:
        created = await docker.create_container(ContainerSpec(image=BUSYBOX_REFERENCE, command=["sleep", "3600"]))
        await docker.start_container(created.id)
        state = (await docker.inspect_container(created.id)).state
    assert state.running
    return created.id, state.pid


@pytest.mark.parametrize("kind", ["dockerd", "podman"])
def test_teardown_after_the_engine_was_killed_leaves_no_process_namespace_file_or_cgroup(kind: str) -> None:
    require_engine(kind)
    starter = running_dockerd if kind == "dockerd" else running_podman
    with starter() as engine:
        import_busybox_image(engine.socket_path)
        container_id, container_pid = trio.run(start_sleeper, engine.socket_path)
        assert process_running(container_pid)
        engine.kill()
    assert not engine.workdir.exists()
    assert (
        engine.netns not in subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True).stdout
    )
    assert not process_running(container_pid)
    assert not process_running(engine.pid)
    leftovers = [path for path in CGROUP_ROOT.glob(f"*/*/*{container_id}") if path.is_dir()]
    assert leftovers == []
