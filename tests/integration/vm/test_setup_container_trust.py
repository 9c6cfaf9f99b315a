"""The setup containers run the image dmnc inspected, through a real dockerd: re-pointing the setup image's tag between
dmnc's inspect and its create calls (anyone with access to the engine can) does not change what runs with NET_ADMIN
in the VM's network.

The impostor is busybox: it has /bin/sh but no `wg`, so had it run, the setup would fail with the script's "`wg` is
missing" error instead of bringing up the userspace fallback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import trio

from dmnc.docker.client import ContainerRun, ContainerSpec, DockerClient
from dmnc.docker.models import ImageInfo
from dmnc.vm import SetupParams, VmMode
from dmnc.vm.runner import FALLBACK_CONTAINER_NAME, VmSetupRunner
from tests.conftest import require_root, require_tools
from tests.lab.dockerd import EngineProcess, import_busybox_image, running_dockerd
from tests.lab.setup_image import LAB_SETUP_IMAGE, import_setup_image

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# TEST-NET-1 (RFC 5737): the fallback's peer endpoint; nothing needs to answer there for the setup to finish.
UNREACHABLE_HOST = "192.0.2.1"
HOST_PORT = 51820


@dataclass(frozen=True)
class TrustLab:
    engine: EngineProcess
    setup_image_id: str
    impostor_image_id: str


@pytest.fixture
def trust_lab() -> Iterator[TrustLab]:
    require_root()
    require_tools("dockerd", "iptables")
    with running_dockerd() as engine:
        setup_image_id = import_setup_image(engine.socket_path)
        impostor_image_id = import_busybox_image(engine.socket_path)
        yield TrustLab(engine, setup_image_id, impostor_image_id)


@pytest.fixture
async def docker(trust_lab: TrustLab) -> AsyncIterator[DockerClient]:
    async with DockerClient.connect(f"unix://{trust_lab.engine.socket_path}") as client:
        yield client


def tag_image(engine: EngineProcess, image_id: str, reference: str) -> None:
    """`docker tag IMAGE_ID REFERENCE` through the Engine API (`POST /images/{name}/tag`)."""
    repository, _, tag = reference.rpartition(":")
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(engine.socket_path)), base_url="http://docker") as raw:
        raw.post(f"/images/{image_id}/tag", params={"repo": repository, "tag": tag}, timeout=30.0).raise_for_status()


def repoint_after_first_inspect(
    monkeypatch: pytest.MonkeyPatch, docker: DockerClient, lab: TrustLab, reference: str
) -> list[str]:
    """Make the engine re-point `reference` to the impostor right after dmnc's first inspect of it has answered;
    returns the list of IDs those inspects answered."""
    real_inspect = docker.inspect_image
    answered: list[str] = []

    async def inspect_then_repoint(image: str) -> ImageInfo:
        info = await real_inspect(image)
        answered.append(info.id)
        if image == reference and len(answered) == 1:
            await trio.to_thread.run_sync(tag_image, lab.engine, lab.impostor_image_id, reference)
        return info

    monkeypatch.setattr(docker, "inspect_image", inspect_then_repoint)
    return answered


async def test_a_tag_re_pointed_after_the_inspect_does_not_change_what_the_setup_runs(
    trust_lab: TrustLab, docker: DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = trust_lab
    answered = repoint_after_first_inspect(monkeypatch, docker, lab, LAB_SETUP_IMAGE)
    runner = VmSetupRunner(docker, setup_image=LAB_SETUP_IMAGE)
    params = SetupParams(bytes(range(32)), HOST_PORT, endpoint=UNREACHABLE_HOST)
    try:
        result = await runner.setup(params)
        # The tag now names busybox, yet both the one-shot setup (it found no kernel WireGuard) and the long-running
        # fallback ran the image that was inspected.
        assert answered == [lab.setup_image_id]
        assert (await docker.inspect_image(LAB_SETUP_IMAGE)).id == lab.impostor_image_id
        assert result.mode is VmMode.USERSPACE
        fallback = await docker.inspect_container(FALLBACK_CONTAINER_NAME)
        assert fallback.image == lab.setup_image_id
    finally:
        with trio.CancelScope(shield=True):
            # Teardown inspects the tag afresh: point it back so the cleanup runs the setup image.
            tag_image(lab.engine, lab.setup_image_id, LAB_SETUP_IMAGE)
            await runner.teardown(params)


async def test_the_kernel_check_runs_the_inspected_image_too(
    trust_lab: TrustLab, docker: DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = trust_lab
    repoint_after_first_inspect(monkeypatch, docker, lab, LAB_SETUP_IMAGE)
    # Both images would answer kernel-missing here (busybox's sh runs the script too, and this kernel has no
    # WireGuard): what must differ is the image the one-shot container was created from.
    seen_images: list[str] = []
    real_run = docker.run_container

    async def recording_run(spec: ContainerSpec, *, name: str | None = None) -> ContainerRun:
        seen_images.append(spec.image)
        return await real_run(spec, name=name)

    monkeypatch.setattr(docker, "run_container", recording_run)
    await VmSetupRunner(docker, setup_image=LAB_SETUP_IMAGE).check_kernel()
    assert seen_images == [lab.setup_image_id]
