"""dmnc's VM setup through a real Docker Engine: dockerd in a namespace is the "VM", a wireguard-go peer in another
namespace stands in for dmnc on the "host". This kernel has no WireGuard, so the userspace fallback carries the tunnel.
"""

from __future__ import annotations

import base64
import contextlib
import io
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
import trio

from dmnc.docker.client import ContainerSpec, DockerClient
from dmnc.docker.errors import NotFound
from dmnc.vm import SetupImageError, SetupParams, SetupResult, SetupScriptError, VmMode
from dmnc.vm.runner import FALLBACK_CONTAINER_NAME, VmSetupRunner
from tests.conftest import require_root, require_tools
from tests.integration.tunnel.peers import DmncPeer, dmnc_wg, render_dmnc_config
from tests.lab.dockerd import (
    BUSYBOX_REFERENCE,
    EngineProcess,
    import_busybox_image,
    import_image,
    rootfs_tar,
    running_dockerd,
    running_podman,
)
from tests.lab.netns import Netns, add_veth, netns, wait_for_ping
from tests.lab.setup_image import LAB_SETUP_IMAGE, import_setup_image
from tests.lab.wait import wait_until
from tests.lab.wggo import WgPeer, WireGuardGo, wg_genkey, wg_pubkey, wireguard_go

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HOST_PORT = 51820
HANDSHAKE_TIMEOUT_SECONDS = 15.0
HTTP_TIMEOUT_SECONDS = 10.0
BRIDGE_SUBNET = "172.30.1.0/24"
INTERNAL_SUBNET = "172.30.2.0/24"
PAGE = "hello-from-dmnc-lab"
KEY_FILE = "/var/lib/dmnc-setup/private.key"


@dataclass
class DockerLab:
    engine: EngineProcess
    vm: Netns
    host: Netns
    host_peer: WireGuardGo
    params: SetupParams
    progress: list[str]


@pytest.fixture
def docker_lab() -> Iterator[DockerLab]:
    require_root()
    require_tools("ip", "wg", "wireguard-go", "dockerd", "iptables", "curl", "ldd")
    with running_dockerd() as engine, netns("dmho") as host:
        vm = Netns(engine.netns)  # owned (and deleted) by running_dockerd
        link = add_veth(host, vm, "10.202.0.1/24", "10.202.0.2/24")
        import_setup_image(engine.socket_path)
        import_busybox_image(engine.socket_path)
        with wireguard_go(host, address="10.33.33.1/32", listen_port=HOST_PORT) as host_peer:
            params = SetupParams(base64.b64decode(host_peer.public_key), HOST_PORT, endpoint=str(link.left_address.ip))
            yield DockerLab(engine, vm, host, host_peer, params, [])


@pytest.fixture
async def docker(docker_lab: DockerLab) -> AsyncIterator[DockerClient]:
    async with DockerClient.connect(f"unix://{docker_lab.engine.socket_path}") as client:
        yield client


@pytest.fixture
def runner(docker_lab: DockerLab, docker: DockerClient) -> VmSetupRunner:
    return VmSetupRunner(docker, setup_image=LAB_SETUP_IMAGE, on_progress=docker_lab.progress.append)


def engine_get(engine: EngineProcess, path: str) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(engine.socket_path)), base_url="http://docker") as raw:
        response = raw.get(path, timeout=10.0)
        response.raise_for_status()
        return response


def connect_host_peer(lab: DockerLab, result: SetupResult, subnets: list[str]) -> None:
    """dmnc's part: trust the VM key for the VM tunnel address and the container subnets, route them to the tunnel."""
    vm_key = base64.b64encode(result.vm_public_key).decode()
    lab.host_peer.peers = [WgPeer(vm_key, ["10.33.33.2/32", *subnets])]
    lab.host_peer.apply_config()
    for destination in ["10.33.33.2/32", *subnets]:
        lab.host.run(["ip", "route", "replace", destination, "dev", lab.host_peer.interface])


def http_from_host(host: Netns, address: str, timeout: float = HTTP_TIMEOUT_SECONDS) -> str:
    """GET / from the host namespace, retried until it answers or `timeout` seconds pass; '' if it never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = host.run(["curl", "-s", "--max-time", "2", f"http://{address}/"], check=False)
        if result.returncode == 0:
            return result.stdout
        time.sleep(0.2)
    return ""


async def start_web_container(docker: DockerClient, engine: EngineProcess, network: str) -> tuple[str, str]:
    """A busybox httpd on `network`; returns (its IP address, the network's bridge interface)."""
    command = f"mkdir -p /www && echo {PAGE} > /www/index.html && exec httpd -f -p 80 -h /www"
    created = await docker.create_container(
        ContainerSpec(image=BUSYBOX_REFERENCE, command=["sh", "-c", command], network_mode=network)
    )
    await docker.start_container(created.id)
    inspected = engine_get(engine, f"/containers/{created.id}/json").json()
    address: str = inspected["NetworkSettings"]["Networks"][network]["IPAddress"]
    network_id: str = engine_get(engine, f"/networks/{network}").json()["Id"]
    return address, f"br-{network_id[:12]}"


async def remove_all_containers(docker: DockerClient, engine: EngineProcess) -> None:
    # busybox httpd ignores SIGTERM as PID 1: without this dockerd's shutdown would wait 10 s for each.
    for container in engine_get(engine, "/containers/json?all=1").json():
        with contextlib.suppress(NotFound):
            await docker.remove_container(container["Id"], force=True)


def add_docker_28_drop_rules(vm: Netns, container_address: str, bridge: str) -> None:
    """What Docker >= 28 and Docker Desktop >= 4.39 add (Docker Engine 28 release notes: direct access to container
    addresses is blocked): direct-access filtering of container addresses from any other interface, and a DROP for
    traffic forwarded into the bridge from foreign interfaces."""
    vm.run(["iptables", "-t", "raw", "-A", "PREROUTING", "-d", container_address, "!", "-i", bridge, "-j", "DROP"])
    vm.run(["iptables", "-I", "DOCKER", "!", "-i", bridge, "-o", bridge, "-j", "DROP"])


def dmnc_rules(lab: DockerLab) -> list[str]:
    rules = []
    for save in ("iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save", "ip6tables-legacy-save"):
        for line in lab.vm.run([save]).stdout.splitlines():
            if line.startswith("-A ") and ("chip0" in line or "10.33.33.1" in line or "fd33:33:33::1" in line):
                rules.append(f"{save}: {line}")
    return rules


async def test_containers_answer_from_the_host_through_the_fallback_tunnel(
    docker_lab: DockerLab, docker: DockerClient, runner: VmSetupRunner
) -> None:
    lab = docker_lab
    result = await runner.setup(lab.params)
    assert result.mode is VmMode.USERSPACE
    assert result.endpoint == (str(lab.params.endpoint), HOST_PORT)
    assert any("no WireGuard" in line for line in lab.progress)

    try:
        await check_containers_through_tunnel(lab, docker, runner, result)
    finally:
        await remove_all_containers(docker, lab.engine)


async def check_containers_through_tunnel(
    lab: DockerLab, docker: DockerClient, runner: VmSetupRunner, result: SetupResult
) -> None:
    await docker.create_network("dmnc-web", subnets=[BRIDGE_SUBNET])
    await docker.create_network("dmnc-internal", subnets=[INTERNAL_SUBNET], internal=True)
    web_address, web_bridge = await start_web_container(docker, lab.engine, "dmnc-web")
    internal_address, _ = await start_web_container(docker, lab.engine, "dmnc-internal")
    connect_host_peer(lab, result, [BRIDGE_SUBNET, INTERNAL_SUBNET])
    lab.host_peer.wait_for_handshake(HANDSHAKE_TIMEOUT_SECONDS)

    assert PAGE in http_from_host(lab.host, web_address)
    assert PAGE in http_from_host(lab.host, internal_address)

    # What Docker >= 28 and Docker Desktop >= 4.39 add: direct-access filtering and a DROP for foreign interfaces.
    add_docker_28_drop_rules(lab.vm, web_address, web_bridge)
    assert PAGE in http_from_host(lab.host, web_address)
    # Those rules really bite without dmnc's: drop its raw and DOCKER-USER accepts and the container is gone.
    first_rules = sorted(dmnc_rules(lab))
    lab.vm.run(["iptables", "-t", "raw", "-D", "PREROUTING", "-i", "chip0", "-j", "ACCEPT"])
    lab.vm.run(["iptables", "-D", "DOCKER-USER", "-i", "chip0", "-j", "ACCEPT"])
    assert http_from_host(lab.host, web_address, timeout=4) == ""

    # Running setup again restores them, leaving exactly one copy of each rule.
    again = await runner.setup(lab.params)
    assert sorted(dmnc_rules(lab)) == first_rules
    # raw PREROUTING, OUTPUT and DOCKER-USER out to DMNC-TO-HOST, DOCKER-USER in, nat: for IPv4 and IPv6, in
    # Docker's backend.
    assert len(first_rules) == 10
    connect_host_peer(lab, again, [BRIDGE_SUBNET, INTERNAL_SUBNET])
    assert PAGE in http_from_host(lab.host, web_address)

    await runner.teardown(lab.params)
    assert dmnc_rules(lab) == []
    assert lab.vm.run(["ip", "link", "show", "chip0"], check=False).returncode != 0
    with pytest.raises(NotFound):
        await docker.inspect_container(FALLBACK_CONTAINER_NAME)


async def test_vm_private_key_is_absent_from_inspect_output_and_logs(
    docker_lab: DockerLab, runner: VmSetupRunner
) -> None:
    lab = docker_lab
    result = await runner.setup(lab.params)
    archive = engine_get(lab.engine, f"/containers/{FALLBACK_CONTAINER_NAME}/archive?path={KEY_FILE}").content
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("private.key")
        assert member is not None
        private_key = member.read().decode().strip()
    public_key = subprocess.run(["wg", "pubkey"], input=private_key, capture_output=True, text=True, check=True)
    assert base64.b64decode(public_key.stdout.strip()) == result.vm_public_key

    inspect_text = engine_get(lab.engine, f"/containers/{FALLBACK_CONTAINER_NAME}/json").text
    logs = engine_get(lab.engine, f"/containers/{FALLBACK_CONTAINER_NAME}/logs?stdout=1&stderr=1").content
    assert private_key not in inspect_text
    assert private_key.encode() not in logs
    assert base64.b64encode(result.vm_public_key) in logs  # the public key is printed, on purpose


async def test_missing_setup_image_that_cannot_be_pulled_says_what_to_do(
    docker_lab: DockerLab, docker: DockerClient
) -> None:
    offline = VmSetupRunner(docker, setup_image="dmnc-test/absent:never")
    with pytest.raises(SetupImageError, match=r"not in the VM and pulling it failed.*registry access"):
        await offline.setup(docker_lab.params)


async def test_unsuitable_setup_images_fail_with_a_clear_reason(docker_lab: DockerLab, docker: DockerClient) -> None:
    # busybox has /bin/sh (and an `ip` applet) but no `wg`: the script itself says which tool is missing.
    with pytest.raises(SetupScriptError, match="the `wg` command is missing from the setup image"):
        await VmSetupRunner(docker, setup_image=BUSYBOX_REFERENCE).setup(docker_lab.params)
    # No shell at all: the engine cannot start the container, and the error says what the image needs.
    import_image(docker_lab.engine.socket_path, rootfs_tar({"/etc/hostname": b"empty\n"}), "dmnc-test/empty:1")
    with pytest.raises(SetupImageError, match=r"could not run: .*needs /bin/sh"):
        await VmSetupRunner(docker, setup_image="dmnc-test/empty:1").setup(docker_lab.params)
    assert engine_get(docker_lab.engine, "/containers/json?all=1").json() == []


async def test_building_the_default_image_offline_fails_with_a_hint(
    docker_lab: DockerLab, docker: DockerClient
) -> None:
    default = VmSetupRunner(docker, on_progress=docker_lab.progress.append)
    with pytest.raises(SetupImageError, match=r"offline or behind a proxy.*--setup-image"):
        await default.ensure_image()
    assert any("building the setup image dmnc-setup:" in line for line in docker_lab.progress)


async def test_fallback_restarted_by_docker_comes_back_with_the_same_key(
    docker_lab: DockerLab, runner: VmSetupRunner
) -> None:
    lab = docker_lab
    result = await runner.setup(lab.params)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(lab.engine.socket_path)), base_url="http://docker") as raw:
        raw.post(f"/containers/{FALLBACK_CONTAINER_NAME}/restart", params={"t": "5"}, timeout=30.0).raise_for_status()
    vm_key = base64.b64encode(result.vm_public_key)
    command = engine_get(lab.engine, f"/containers/{FALLBACK_CONTAINER_NAME}/json").json()["Config"]["Cmd"]
    nonce = command[command.index("--nonce") + 1].encode()
    result_line = b"dmnc-setup-result v1 nonce=" + nonce + b" mode=userspace public-key=" + vm_key

    def result_lines() -> int:
        logs = engine_get(lab.engine, f"/containers/{FALLBACK_CONTAINER_NAME}/logs?stdout=1&stderr=1").content
        return logs.count(result_line)

    # Each start prints one result line (the restart repeats the argv, nonce included); the restarted script reused
    # the key kept in the container.
    wait_until(
        lambda: result_lines() == 2,
        HANDSHAKE_TIMEOUT_SECONDS,
        "the restarted fallback's second result line with the same key",
        interval=0.2,
    )
    connect_host_peer(lab, result, [])
    lab.host_peer.wait_for_handshake(HANDSHAKE_TIMEOUT_SECONDS)


async def test_setup_through_podmans_docker_api_brings_up_the_fallback_tunnel() -> None:
    require_root()
    require_tools("ip", "wg", "wireguard-go", "podman", "ldd")
    with running_podman() as engine, netns("dmho") as host:
        vm = Netns(engine.netns)  # owned (and deleted) by running_podman
        link = add_veth(host, vm, "10.202.0.1/24", "10.202.0.2/24")
        import_setup_image(engine.socket_path)
        with wireguard_go(host, address="10.33.33.1/32", listen_port=HOST_PORT) as host_peer:
            params = SetupParams(base64.b64decode(host_peer.public_key), HOST_PORT, endpoint=str(link.left_address.ip))
            lab = DockerLab(engine, vm, host, host_peer, params, [])
            async with DockerClient.connect(f"unix://{engine.socket_path}") as docker:
                runner = VmSetupRunner(docker, setup_image=LAB_SETUP_IMAGE)
                result = await runner.setup(params)
                assert result.mode is VmMode.USERSPACE
                connect_host_peer(lab, result, [])
                lab.host_peer.wait_for_handshake(HANDSHAKE_TIMEOUT_SECONDS)
                assert wait_for_ping(host, "10.33.33.2")
                await runner.teardown(params)
                assert dmnc_rules(lab) == []


async def test_dmncs_own_peer_reaches_bridge_and_internal_containers_through_the_vm_setup() -> None:
    """The same path with dmnc's own WireGuard peer (`dmnc wg up`) on the host instead of wireguard-go."""
    require_root()
    require_tools("ip", "wg", "wireguard-go", "dockerd", "iptables", "curl", "ldd")
    host_private_key = wg_genkey()
    host_public_key = base64.b64decode(wg_pubkey(host_private_key))
    subnets = [BRIDGE_SUBNET, INTERNAL_SUBNET]
    with running_dockerd() as engine, netns("dmho") as host:
        vm = Netns(engine.netns)  # owned (and deleted) by running_dockerd
        link = add_veth(host, vm, "10.202.0.1/24", "10.202.0.2/24")
        import_setup_image(engine.socket_path)
        import_busybox_image(engine.socket_path)
        params = SetupParams(host_public_key, HOST_PORT, endpoint=str(link.left_address.ip))
        async with DockerClient.connect(f"unix://{engine.socket_path}") as docker:
            result = await VmSetupRunner(docker, setup_image=LAB_SETUP_IMAGE).setup(params)
            await docker.create_network("dmnc-web", subnets=[BRIDGE_SUBNET])
            await docker.create_network("dmnc-internal", subnets=[INTERNAL_SUBNET], internal=True)
            vm_peer = DmncPeer(base64.b64encode(result.vm_public_key).decode(), ["10.33.33.2/32", *subnets])
            config = render_dmnc_config(host_private_key, "10.33.33.1/32", HOST_PORT, [vm_peer])
            try:
                web_address, web_bridge = await start_web_container(docker, engine, "dmnc-web")
                internal_address, _ = await start_web_container(docker, engine, "dmnc-internal")
                with dmnc_wg(host, config) as dmnc:
                    for destination in ("10.33.33.2/32", *subnets):
                        host.run(["ip", "route", "replace", destination, "dev", dmnc.interface])
                    assert PAGE in http_from_host(host, web_address)
                    assert PAGE in http_from_host(host, internal_address)
                    add_docker_28_drop_rules(vm, web_address, web_bridge)
                    assert PAGE in http_from_host(host, web_address)
            finally:
                await remove_all_containers(docker, engine)


async def test_dmnc_vm_teardown_command_cleans_the_vm(docker_lab: DockerLab, runner: VmSetupRunner) -> None:
    lab = docker_lab
    await runner.setup(lab.params)
    assert dmnc_rules(lab) != []
    socket_url = f"unix://{lab.engine.socket_path}"
    command = [sys.executable, "-m", "dmnc", "vm", "teardown", "--docker-host", socket_url]
    completed = await trio.run_process(
        [*command, "--setup-image", LAB_SETUP_IMAGE], capture_stdout=True, capture_stderr=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert b"removed chip0" in completed.stdout
    assert dmnc_rules(lab) == []
    assert engine_get(lab.engine, "/containers/json?all=1").json() == []

    missing = [sys.executable, "-m", "dmnc", "vm", "teardown", "--docker-host", f"{socket_url}.missing"]
    failed = await trio.run_process(missing, capture_stdout=True, capture_stderr=True, check=False)
    assert failed.returncode == 1
    assert failed.stderr.decode().startswith("dmnc: ")
    assert failed.stderr.count(b"\n") == 1
