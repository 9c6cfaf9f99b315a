"""The client against real engines: Debian's dockerd (API 1.41) and Podman 4.3's Docker-compatible API.

`GUARD_S` bounds each wait so a regression fails instead of hanging; it is never what a test measures.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from dmnc.cli import main
from dmnc.docker.buildcontext import build_context_tar
from dmnc.docker.client import ContainerSpec, DockerClient
from dmnc.docker.discovery import DiscoveryEnvironment, Runtime, detect_runtime, discover_endpoint
from dmnc.docker.errors import ApiError, ApiVersionError, ConnectionLost, DaemonUnavailable, NotFound, OperationFailed
from dmnc.docker.models import Event
from dmnc.docker.streams import StreamKind
from tests.integration.docker.conftest import start_engine
from tests.lab.dockerd import EngineProcess

pytestmark = pytest.mark.lab

GUARD_S = 30.0


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def test_version_info_and_runtime_detection(engine: EngineProcess) -> None:
    async with DockerClient.connect(f"unix://{engine.socket_path}") as docker:
        assert docker.api_version == "1.41"
        assert await docker.ping() == "OK"
        version = await docker.version()
        info = await docker.info()
    expected = Runtime.PODMAN if engine.kind == "podman" else Runtime.DOCKER_ENGINE
    assert detect_runtime(version, info, docker.address) == expected


async def test_real_dockerd_refusing_a_too_new_api_version_is_an_api_version_error(
    dockerd_engine: EngineProcess,
) -> None:
    # Pins our recognition of dockerd's own wording; negotiation is what keeps this from happening.
    async with DockerClient.connect(f"unix://{dockerd_engine.socket_path}") as docker:
        docker.api_version = "1.52"
        with pytest.raises(ApiVersionError) as raised:
            await docker.info()
    assert raised.value.status == 400
    assert "1.52" in raised.value.message


async def test_discovery_uses_docker_host_and_probes_the_real_daemon(engine: EngineProcess) -> None:
    env = DiscoveryEnvironment(
        environ={"DOCKER_HOST": f"unix://{engine.socket_path}"}, euid=0, home_of_user=lambda _: None
    )
    endpoint = await discover_endpoint(env=env)
    assert endpoint.address.socket_path == str(engine.socket_path)


async def test_network_create_inspect_list_remove(engine: EngineProcess) -> None:
    name = unique("dmnc-net")
    async with DockerClient.connect(f"unix://{engine.socket_path}") as docker:
        network_id = await docker.create_network(
            name, subnets=["10.123.0.0/24"], internal=True, labels={"dmnc.test": "1"}
        )
        try:
            network = await docker.inspect_network(network_id)
            assert (network.name, network.internal, network.labels["dmnc.test"]) == (name, True, "1")
            assert [str(subnet) for subnet in network.subnets] == ["10.123.0.0/24"]
            listed = await docker.list_networks(filters={"name": [name]})
            assert [item.id for item in listed] == [network_id]
        finally:
            await docker.remove_network(network_id)
        with pytest.raises(NotFound):
            await docker.inspect_network(network_id)


async def collect_until(
    docker: DockerClient, since: int, filters: dict[str, list[str]], last_actions: set[str]
) -> list[Event]:
    events: list[Event] = []
    with trio.fail_after(GUARD_S):
        async with docker.events(filters=filters, since=since) as stream:
            async for event in stream:
                events.append(event)
                if event.action in last_actions:
                    return events
    return events


async def test_network_lifecycle_is_seen_on_the_event_stream_in_order(dockerd_engine: EngineProcess) -> None:
    name = unique("dmnc-ev")
    async with DockerClient.connect(f"unix://{dockerd_engine.socket_path}") as docker:
        since = time.time_ns()
        network_id = await docker.create_network(name, subnets=["10.124.0.0/24"])
        assert (await docker.inspect_network(network_id)).name == name
        await docker.remove_network(network_id)
        events = await collect_until(docker, since, {"type": ["network"], "network": [network_id]}, {"destroy"})
    assert [(event.type, event.action, event.actor_id) for event in events] == [
        ("network", "create", network_id),
        ("network", "destroy", network_id),
    ]
    assert events[0].actor_attributes["name"] == name
    assert events[0].time_nano <= events[1].time_nano


async def test_container_lifecycle_is_seen_on_the_event_stream_in_order(engine: EngineProcess, busybox: str) -> None:
    async with DockerClient.connect(f"unix://{engine.socket_path}") as docker:
        since = time.time_ns()
        run = await docker.run_container(ContainerSpec(image=busybox, command=["true"]))
        # Podman reports removal as "remove", dockerd as "destroy".
        events = await collect_until(
            docker, since, {"type": ["container"], "container": [run.container_id]}, {"destroy", "remove"}
        )
    actions = [event.action for event in events]
    positions = [next(i for i, action in enumerate(actions) if action in wanted) for wanted in
                 ({"create"}, {"start"}, {"die", "died"}, {"destroy", "remove"})]  # fmt: skip
    assert positions == sorted(positions), actions


async def test_image_built_from_an_in_memory_context(engine: EngineProcess, busybox: str) -> None:
    tag = f"dmnc-test/built-{secrets.token_hex(3)}:1"
    context = build_context_tar(
        {
            "Dockerfile": f'FROM {busybox}\nCOPY hello.sh /hello.sh\nLABEL dmnc.test=built\nCMD ["/hello.sh"]\n',
            "hello.sh": "#!/bin/sh\necho built image says hello\n",
        },
        executable={"hello.sh"},
    )
    async with DockerClient.connect(f"unix://{engine.socket_path}") as docker:
        output: list[str] = []
        with trio.fail_after(GUARD_S):
            async with docker.build_image(context, tag) as build:
                async for message in build:
                    output.append(message.stream)
                built_id = build.image_id
        image = await docker.inspect_image(tag)
        assert built_id is not None
        assert image.id.removeprefix("sha256:").startswith(built_id.removeprefix("sha256:"))
        assert image.labels.get("dmnc.test") == "built"
        assert "".join(output)
        run = await docker.run_container(ContainerSpec(image=tag))
    assert (run.exit_code, run.stdout) == (0, b"built image says hello\n")


async def test_failing_build_is_operation_failed(engine: EngineProcess, busybox: str) -> None:
    context = build_context_tar({"Dockerfile": f"FROM {busybox}\nRUN exit 7\n"})
    async with DockerClient.connect(f"unix://{engine.socket_path}") as docker:
        with trio.fail_after(GUARD_S), pytest.raises((OperationFailed, ApiError)):
            await drain_build(docker, context)


async def drain_build(docker: DockerClient, context: bytes) -> None:
    async with docker.build_image(context, f"dmnc-test/fails-{secrets.token_hex(3)}:1") as build:
        await build.drain()


async def test_pull_from_an_unreachable_registry_is_a_typed_error(engine: EngineProcess) -> None:
    # Port 1 on the engine namespace's own loopback: nothing listens, nothing leaves the namespace.
    async with DockerClient.connect(f"unix://{engine.socket_path}") as docker:
        with trio.fail_after(GUARD_S), pytest.raises((OperationFailed, ApiError)):
            await drain_pull(docker, "127.0.0.1:1/dmnc/nothing:1")


async def drain_pull(docker: DockerClient, reference: str) -> None:
    async with docker.pull_image(reference) as progress:
        await progress.drain()


async def test_container_runs_to_completion_with_stdout_and_stderr_apart(engine: EngineProcess, busybox: str) -> None:
    script = "echo to-stdout; echo to-stderr >&2; echo more-stdout; exit 3"
    async with DockerClient.connect(f"unix://{engine.socket_path}") as docker:
        with trio.fail_after(GUARD_S):
            run = await docker.run_container(ContainerSpec(image=busybox, command=["sh", "-c", script]))
        assert run.exit_code == 3
        assert run.stdout == b"to-stdout\nmore-stdout\n"
        assert run.stderr == b"to-stderr\n"
        with pytest.raises(NotFound):
            await docker.inspect_container(run.container_id)


async def test_create_start_wait_inspect_logs_step_by_step(dockerd_engine: EngineProcess, busybox: str) -> None:
    # run_container covers the same calls on both engines; this pins each step's result on one.
    async with DockerClient.connect(f"unix://{dockerd_engine.socket_path}") as docker:
        created = await docker.create_container(
            ContainerSpec(image=busybox, command=["sh", "-c", "echo a; echo b >&2"])
        )
        try:
            await docker.start_container(created.id)
            with trio.fail_after(GUARD_S):
                assert (await docker.wait_container(created.id)).status_code == 0
            state = (await docker.inspect_container(created.id)).state
            assert (state.running, state.exit_code) == (False, 0)
            async with docker.container_logs(created.id) as logs:
                chunks = [(chunk.stream, chunk.data) async for chunk in logs]
        finally:
            await docker.remove_container(created.id, force=True)
    assert (StreamKind.STDOUT, b"a\n") in chunks
    assert (StreamKind.STDERR, b"b\n") in chunks


async def test_websocket_attach_delivers_output_while_the_container_runs(
    dockerd_engine: EngineProcess, busybox: str
) -> None:
    script = "echo first; sleep 1; echo second >&2; echo third"
    async with DockerClient.connect(f"unix://{dockerd_engine.socket_path}") as docker:
        created = await docker.create_container(ContainerSpec(image=busybox, command=["sh", "-c", script]))
        received = b""
        running_when_first_line_arrived = False
        try:
            with trio.fail_after(GUARD_S):
                async with docker.attach_websocket(created.id) as session:
                    await docker.start_container(created.id)
                    async for data in session:
                        if not received:
                            running_when_first_line_arrived = (await docker.inspect_container(created.id)).state.running
                        received += data
        finally:
            await docker.remove_container(created.id, force=True)
    # stdout and stderr are separate pipes in the container: their relative order is not kept, each one's is.
    assert received.startswith(b"first\n")
    assert sorted(received.splitlines()) == [b"first", b"second", b"third"]
    assert running_when_first_line_arrived


async def test_websocket_attach_sends_stdin(dockerd_engine: EngineProcess, busybox: str) -> None:
    spec = ContainerSpec(image=busybox, command=["sh", "-c", "read line; echo got $line"], open_stdin=True)
    async with DockerClient.connect(f"unix://{dockerd_engine.socket_path}") as docker:
        created = await docker.create_container(spec)
        received = b""
        try:
            with trio.fail_after(GUARD_S):
                async with docker.attach_websocket(created.id, stdin=True) as session:
                    await docker.start_container(created.id)
                    await session.send(b"hello\n")
                    async for data in session:
                        received += data
        finally:
            await docker.remove_container(created.id, force=True)
    assert received.endswith(b"got hello\n")


async def read_attach_while_killing(docker: DockerClient, engine: EngineProcess, container_id: str) -> None:
    async with docker.attach_websocket(container_id) as session:
        await docker.start_container(container_id)
        assert await session.receive() == b"started\n"
        engine.kill()
        async for _data in session:
            pass


@pytest.fixture
def own_dockerd() -> Iterator[EngineProcess]:
    """A dockerd this test may kill."""
    yield from start_engine("dockerd")


async def test_daemon_killed_during_attach_is_connection_lost(own_dockerd: EngineProcess, busybox: str) -> None:
    async with DockerClient.connect(f"unix://{own_dockerd.socket_path}") as docker:
        spec = ContainerSpec(image=busybox, command=["sh", "-c", "echo started; sleep 60"])
        created = await docker.create_container(spec)
        with trio.fail_after(GUARD_S), pytest.raises(ConnectionLost):
            await read_attach_while_killing(docker, own_dockerd, created.id)


async def test_attach_to_a_missing_container_is_not_found(dockerd_engine: EngineProcess) -> None:
    async with DockerClient.connect(f"unix://{dockerd_engine.socket_path}") as docker:
        with trio.fail_after(GUARD_S), pytest.raises(NotFound):
            async with docker.attach_websocket("dmnc-no-such-container"):
                pass


@pytest.fixture(params=["dockerd", "podman"])
def own_engine(request: pytest.FixtureRequest) -> Iterator[EngineProcess]:
    """An engine this test may kill."""
    yield from start_engine(request.param)


async def watch_events_while_killing(docker: DockerClient, engine: EngineProcess) -> None:
    async with docker.events() as stream:
        engine.kill()
        async for _event in stream:
            pass


async def test_daemon_killed_mid_stream_is_daemon_unavailable_not_a_hang(own_engine: EngineProcess) -> None:
    async with DockerClient.connect(f"unix://{own_engine.socket_path}") as docker:
        with trio.fail_after(GUARD_S), pytest.raises(ConnectionLost):
            await watch_events_while_killing(docker, own_engine)
        with trio.fail_after(GUARD_S), pytest.raises(DaemonUnavailable):
            await docker.ping()


def test_dmnc_docker_command_reports_the_daemon_and_its_networks(
    engine: EngineProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("DMNC_CONFIG", str(config))
    assert main(["docker", "--docker-host", f"unix://{engine.socket_path}"]) == 0
    report = capsys.readouterr().out
    product = "Podman" if engine.kind == "podman" else "Docker Engine"
    assert f"--docker-host: unix://{engine.socket_path}: ok" in report
    assert f"product: {product}" in report
    assert "API 1.41" in report
    # Each engine's default network, which Podman's compat API also calls "bridge".
    default_subnet = "10.88.0.0/16" if engine.kind == "podman" else "172.17.0.0/16"
    assert f"  bridge (bridge, local): {default_subnet}\n" in report


async def test_run_container_collects_output_even_when_the_spec_asks_for_auto_remove(
    dockerd_engine: EngineProcess, busybox: str
) -> None:
    spec = ContainerSpec(image=busybox, command=["echo", "kept"], auto_remove=True)
    async with DockerClient.connect(f"unix://{dockerd_engine.socket_path}") as docker:
        with trio.fail_after(GUARD_S):
            run = await docker.run_container(spec)
        assert run.stdout == b"kept\n"
        with pytest.raises(NotFound):
            await docker.inspect_container(run.container_id)
