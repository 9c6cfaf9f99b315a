"""`dmnc uninstall` against a real dockerd: the service file, the VM side and the setup images go, and it says so."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from dmnc.docker.client import DockerClient
from dmnc.vm import SetupParams
from dmnc.vm.runner import VmSetupRunner
from dmnc.wireguard import generate_private_key, public_key
from tests.conftest import dmnc_command
from tests.lab.service_lab import HOST_ADDRESS, ServiceLab, vm_leftovers
from tests.lab.setup_image import import_setup_image

pytestmark = pytest.mark.lab

SETUP_TAG = "dmnc-setup:uninstall-test"


def uninstall(lab: ServiceLab, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *dmnc_command(),
            "uninstall",
            "--docker-host",
            f"unix://{lab.engine.socket_path}",
            "--config",
            str(lab.config_file),
            "--control-socket",
            str(lab.control_socket),
            "--root",
            str(root),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_uninstall_removes_service_vm_side_and_setup_images_and_reports_each(service_lab: ServiceLab) -> None:
    root = service_lab.workdir / "root"
    installed = subprocess.run(
        [*dmnc_command(), "service", "install", "--root", str(root)], capture_output=True, text=True, check=False
    )
    assert installed.returncode == 0, installed.stderr
    import_setup_image(service_lab.engine.socket_path, SETUP_TAG)
    params = SetupParams(
        public_key(generate_private_key(lambda n: bytes(range(1, n + 1)))), 3333, endpoint=HOST_ADDRESS.split("/")[0]
    )
    async with DockerClient.connect(f"unix://{service_lab.engine.socket_path}") as docker:
        await VmSetupRunner(docker, setup_image=SETUP_TAG).setup(params)
    assert vm_leftovers(service_lab) != []

    result = uninstall(service_lab, root)

    assert result.returncode == 0, result.stderr
    assert "service: removed" in result.stdout
    assert "VM side: removed chip0" in result.stdout
    assert f"setup image: removed {SETUP_TAG}" in result.stdout
    assert vm_leftovers(service_lab) == []
    assert not list(root.rglob("dmnc.service"))
    images = service_lab.engine_request("GET", "/images/json").json()
    assert not [tag for image in images for tag in image.get("RepoTags") or [] if tag.startswith("dmnc-setup")]
    assert base64.b64encode(params.host_public_key).decode() not in result.stdout

    again = uninstall(service_lab, root)
    assert again.returncode == 0, again.stderr
    assert "service: none installed" in again.stdout
    assert "nothing to remove" in again.stdout or "never configured" in again.stdout


def test_uninstall_with_docker_unreachable_says_what_is_left(service_lab: ServiceLab) -> None:
    result = subprocess.run(
        [
            *dmnc_command(),
            "uninstall",
            "--docker-host",
            f"unix://{service_lab.workdir / 'missing.sock'}",
            "--config",
            str(service_lab.config_file),
            "--control-socket",
            str(service_lab.control_socket),
            "--root",
            str(service_lab.workdir / "root"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "VM side: not removed" in result.stderr
    assert "run `sudo dmnc uninstall` again" in result.stderr
    assert "Traceback" not in result.stderr
