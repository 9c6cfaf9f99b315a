"""VmSetupRunner against a scripted fake Engine API: image handling, containers it creates, outcomes and failures."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio

from dmnc import __version__
from dmnc.docker.client import ContainerRun, ContainerSpec
from dmnc.docker.errors import ApiError, ConnectionLost, NotFound, OperationFailed
from dmnc.docker.models import ContainerInfo, ContainerState, CreatedContainer, ImageInfo, ProgressMessage
from dmnc.docker.streams import OutputChunk, StreamKind
from dmnc.vm import (
    ForeignInterface,
    ForeignInterfaceError,
    KernelWireGuardMissing,
    KernelWireGuardPresent,
    ScriptMode,
    SetupImageError,
    SetupParams,
    SetupResult,
    SetupResultError,
    SetupScriptError,
    TeardownDone,
    TeardownParams,
    VmMode,
    VmSetupError,
    script_command,
)
from dmnc.vm import runner as runner_module
from dmnc.vm.params import RUN_NONCE_BYTES
from dmnc.vm.runner import FALLBACK_CONTAINER_NAME, VmSetupRunner, default_setup_image

PARAMS = SetupParams(bytes(32), 51820, endpoint="192.168.65.254")
VM_KEY = bytes(range(32))
RESULT_TAIL = (
    f"public-key={base64.b64encode(VM_KEY).decode()} endpoint=192.168.65.254:51820 endpoint-name=x ipv6=on kernel=6.1"
)
# The fake engine replaces this with the nonce in the command of the container that prints it, as setup.sh does.
RUN_NONCE = b"@RUN-NONCE@"
KERNEL_RESULT = f"dmnc-setup-result v1 nonce=@RUN-NONCE@ mode=kernel {RESULT_TAIL}\n".encode()
USERSPACE_RESULT = f"dmnc-setup-result v1 nonce=@RUN-NONCE@ mode=userspace {RESULT_TAIL}\n".encode()
KERNEL_MISSING = b"dmnc-setup-result v1 nonce=@RUN-NONCE@ mode=kernel-missing kernel=5.10\n"
REMOVED = b"dmnc-setup-result v1 nonce=@RUN-NONCE@ mode=removed kernel=5.10\n"
KERNEL_OK = b"dmnc-setup-result v1 nonce=@RUN-NONCE@ mode=kernel-ok kernel=6.10\n"


def nonce_of(spec: ContainerSpec) -> str:
    """The run nonce in a setup container's command (the value after `--nonce`)."""
    command = list(spec.command or [])
    return command[command.index("--nonce") + 1]


def echo_nonce(spec: ContainerSpec, output: bytes) -> bytes:
    return output.replace(RUN_NONCE, nonce_of(spec).encode())


def image_id_of(reference: str) -> str:
    """The ID the fake engine gives an image built or pulled as `reference`."""
    return "sha256:" + hashlib.sha256(reference.encode()).hexdigest()


@dataclass
class FakeEngine:
    """Plays the daemon: images it has, what one-shot runs print, what the fallback container logs."""

    images: set[str] = field(default_factory=set)
    runs: list[ContainerRun] = field(default_factory=list)
    fallback_chunks: list[bytes] = field(default_factory=list)
    fallback_running: bool = True
    fallback_exit_code: int = 0
    fail_build: str | None = None
    fail_pull: str | None = None
    lose_daemon_in_build: bool = False
    pull_messages: list[ProgressMessage] = field(default_factory=lambda: [ProgressMessage(status="Pulling fs layer")])
    hang_run: bool = False
    refuse_run: str | None = None
    refuse_start: str | None = None
    hang_logs: bool = False
    built: list[tuple[bytes, str, Mapping[str, str]]] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)
    run_specs: list[ContainerSpec] = field(default_factory=list)
    created: list[tuple[ContainerSpec, str | None]] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    existing_containers: set[str] = field(default_factory=set)
    # Tags that someone re-points to another image right after an inspect has answered for them.
    repoint_after_inspect: dict[str, str] = field(default_factory=dict)
    id_overrides: dict[str, str] = field(default_factory=dict)
    logs_read_from: list[str] = field(default_factory=list)

    async def inspect_image(self, image: str) -> ImageInfo:
        if image not in self.images:
            raise NotFound(f"no such image: {image}", status=404)
        answer = ImageInfo(id=self.id_overrides.get(image, image_id_of(image)))
        if image in self.repoint_after_inspect:
            self.id_overrides[image] = image_id_of(self.repoint_after_inspect.pop(image))
        return answer

    def build_image(
        self, context_tar: bytes, tag: str, *, labels: Mapping[str, str] | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[ProgressMessage]]:
        self.built.append((context_tar, tag, dict(labels or {})))
        steps = [ProgressMessage(stream="Step 1/3 : FROM alpine:3.23\n"), ProgressMessage(stream=" ---> Running\n")]
        failure: Exception | None = OperationFailed(self.fail_build) if self.fail_build is not None else None
        if self.lose_daemon_in_build:
            failure = ConnectionLost("connection to the Docker daemon lost", endpoint="POST /build")
        return self._progress(steps, failure, tag)

    def pull_image(self, reference: str) -> AbstractAsyncContextManager[AsyncIterator[ProgressMessage]]:
        self.pulled.append(reference)
        failure = OperationFailed(self.fail_pull) if self.fail_pull is not None else None
        return self._progress(self.pull_messages, failure, reference)

    @asynccontextmanager
    async def _progress(
        self, messages: list[ProgressMessage], failure: Exception | None, image: str
    ) -> AsyncIterator[AsyncIterator[ProgressMessage]]:
        async def stream() -> AsyncIterator[ProgressMessage]:
            for message in messages:
                yield message
            if failure is not None:
                raise failure
            self.images.add(image)

        yield stream()

    async def run_container(self, spec: ContainerSpec, *, name: str | None = None) -> ContainerRun:
        self.run_specs.append(spec)
        if self.refuse_run is not None:
            raise ApiError(self.refuse_run, status=400)
        if self.hang_run:
            await trio.sleep_forever()
        run = self.runs.pop(0)
        return ContainerRun(run.container_id, run.exit_code, echo_nonce(spec, run.stdout), echo_nonce(spec, run.stderr))

    async def create_container(self, spec: ContainerSpec, *, name: str | None = None) -> CreatedContainer:
        self.created.append((spec, name))
        if name is not None:
            self.existing_containers.add(name)
        return CreatedContainer(id="fallback-id")

    async def start_container(self, container: str) -> None:
        if self.refuse_start is not None:
            raise ApiError(self.refuse_start, status=500)
        self.started.append(container)

    async def inspect_container(self, container: str) -> ContainerInfo:
        state = ContainerState(
            status="running" if self.fallback_running else "exited",
            running=self.fallback_running,
            exit_code=self.fallback_exit_code,
        )
        return ContainerInfo(id=container, name=container, image="img", state=state)

    async def remove_container(self, container: str, *, force: bool = False) -> None:
        if container not in self.existing_containers:
            raise NotFound(f"no such container: {container}", status=404)
        self.existing_containers.discard(container)
        self.removed.append(container)

    @asynccontextmanager
    async def _logs(self) -> AsyncIterator[AsyncIterator[OutputChunk]]:
        async def chunks() -> AsyncIterator[OutputChunk]:
            ((spec, _),) = self.created
            for chunk in self.fallback_chunks:
                yield OutputChunk(StreamKind.STDOUT, echo_nonce(spec, chunk))
            if self.hang_logs:
                await trio.sleep_forever()

        yield chunks()

    def container_logs(
        self, container: str, *, follow: bool = False, tty: bool | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[OutputChunk]]:
        assert follow
        self.logs_read_from.append(container)
        return self._logs()


def one_shot(stdout: bytes, stderr: bytes = b"", exit_code: int = 0) -> ContainerRun:
    return ContainerRun("one-shot", exit_code, stdout, stderr)


def engine_with_image(*runs: ContainerRun) -> FakeEngine:
    return FakeEngine(images={default_setup_image()}, runs=list(runs))


async def test_kernel_setup_runs_one_host_network_container_with_only_public_values() -> None:
    engine = engine_with_image(one_shot(KERNEL_RESULT))
    result = await VmSetupRunner(engine).setup(PARAMS)
    assert result == SetupResult(VmMode.KERNEL, VM_KEY, ("192.168.65.254", 51820), "x", "6.1", ipv6=True)
    (spec,) = engine.run_specs
    assert spec.image == image_id_of(f"dmnc-setup:{__version__}")
    assert spec.network_mode == "host"
    assert list(spec.cap_add) == ["NET_ADMIN"]
    assert list(spec.command or []) == script_command(PARAMS, ScriptMode.SETUP, nonce=nonce_of(spec))
    assert spec.entrypoint == []
    assert not spec.env
    assert not spec.privileged
    assert engine.built == []
    assert engine.created == []


async def test_missing_kernel_wireguard_starts_the_fallback_and_reads_its_result_from_the_logs() -> None:
    engine = engine_with_image(one_shot(KERNEL_MISSING))
    # The result line arrives split across chunks, after wireguard-go's banner.
    engine.fallback_chunks = [b"banner\n", USERSPACE_RESULT[:20], USERSPACE_RESULT[20:]]
    engine.hang_logs = True  # the fallback keeps running (and logging) after its result
    progress: list[str] = []
    result = await VmSetupRunner(engine, on_progress=progress.append).setup(PARAMS)
    assert result.mode is VmMode.USERSPACE
    assert any("no WireGuard" in line and "5.10" in line for line in progress)
    ((spec, name),) = engine.created
    assert name == FALLBACK_CONTAINER_NAME
    assert engine.started == ["fallback-id"]
    # The result is read from the container the create call returned, never looked up by its name.
    assert engine.logs_read_from == ["fallback-id"]
    assert spec.image == image_id_of(default_setup_image())
    body = spec.to_json()
    host_config = body["HostConfig"]
    assert isinstance(host_config, dict)
    assert host_config["RestartPolicy"] == {"Name": "unless-stopped"}
    assert host_config["NetworkMode"] == "host"
    assert host_config["CapAdd"] == ["NET_ADMIN"]
    assert host_config["Devices"] == [
        {"PathOnHost": "/dev/net/tun", "PathInContainer": "/dev/net/tun", "CgroupPermissions": "rwm"}
    ]
    assert body["Cmd"] == script_command(PARAMS, ScriptMode.USERSPACE, nonce=nonce_of(spec))
    assert body["Env"] == []


async def test_fallback_output_is_kept_only_as_a_bounded_tail_and_its_result_still_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    echoed_result_length = len(USERSPACE_RESULT) - len(RUN_NONCE) + 2 * RUN_NONCE_BYTES
    monkeypatch.setattr(runner_module, "MAX_FALLBACK_OUTPUT_BYTES", echoed_result_length + 10)
    engine = engine_with_image(one_shot(KERNEL_MISSING))
    engine.fallback_chunks = [b"wireguard-go chatter\n" * 100] * 50 + [USERSPACE_RESULT[:20], USERSPACE_RESULT[20:]]
    engine.hang_logs = True
    result = await VmSetupRunner(engine).setup(PARAMS)
    assert result.mode is VmMode.USERSPACE


async def test_setup_removes_an_earlier_fallback_container_first() -> None:
    engine = engine_with_image(one_shot(KERNEL_RESULT))
    engine.existing_containers.add(FALLBACK_CONTAINER_NAME)
    await VmSetupRunner(engine).setup(PARAMS)
    assert engine.removed == [FALLBACK_CONTAINER_NAME]


async def test_script_failure_is_a_setup_script_error_with_the_scripts_reason() -> None:
    engine = engine_with_image(one_shot(b"", b"dmnc-setup: error: creating chip0: nope (needs NET_ADMIN)\n", 1))
    with pytest.raises(SetupScriptError, match="needs NET_ADMIN") as caught:
        await VmSetupRunner(engine).setup(PARAMS)
    assert caught.value.exit_code == 1


async def test_fallback_that_dies_before_its_result_reports_its_error() -> None:
    engine = engine_with_image(one_shot(KERNEL_MISSING))
    engine.fallback_chunks = [b"dmnc-setup: error: wireguard-go exited before creating chip0\n"]
    engine.fallback_running = False
    engine.fallback_exit_code = 1
    with pytest.raises(SetupScriptError, match="wireguard-go exited"):
        await VmSetupRunner(engine).setup(PARAMS)


async def test_fallback_that_exits_silently_is_reported_with_its_exit_code() -> None:
    engine = engine_with_image(one_shot(KERNEL_MISSING))
    engine.fallback_chunks = [b"exec format error\n"]
    engine.fallback_running = False
    engine.fallback_exit_code = 126
    with pytest.raises(SetupScriptError, match=r"exit 126.*exec format error"):
        await VmSetupRunner(engine).setup(PARAMS)


async def test_fallback_without_result_in_time_is_a_timeout_error(autojump_clock: trio.testing.MockClock) -> None:
    engine = engine_with_image(one_shot(KERNEL_MISSING))
    engine.hang_logs = True
    with pytest.raises(VmSetupError, match="printed no result within 5 s"):
        await VmSetupRunner(engine, run_timeout=5).setup(PARAMS)


async def test_fallback_whose_logs_end_while_it_runs_again_was_restarted() -> None:
    engine = engine_with_image(one_shot(KERNEL_MISSING))
    engine.fallback_chunks = [b"banner\n", b"panic: tun"]
    with pytest.raises(VmSetupError, match=r"restarted before printing a result \(last: panic: tun\)"):
        await VmSetupRunner(engine).setup(PARAMS)


async def test_one_shot_container_that_never_finishes_is_a_timeout_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = engine_with_image()
    engine.hang_run = True
    with pytest.raises(VmSetupError, match="setup container did not finish within 7 s"):
        await VmSetupRunner(engine, run_timeout=7).setup(PARAMS)


async def test_missing_default_image_is_built_from_the_embedded_dockerfile_with_progress() -> None:
    engine = FakeEngine(runs=[one_shot(KERNEL_RESULT)])
    progress: list[str] = []
    await VmSetupRunner(engine, on_progress=progress.append).setup(PARAMS)
    ((context, tag, labels),) = engine.built
    assert tag == default_setup_image()
    assert labels == {"dev.dmnc.version": __version__}
    assert b"FROM alpine" in context
    assert "Step 1/3 : FROM alpine:3.23" in progress
    assert engine.pulled == []


async def test_failed_build_says_what_to_do() -> None:
    engine = FakeEngine(fail_build="fetch https://dl-cdn.alpinelinux.org: temporary error")
    with pytest.raises(SetupImageError, match=r"failed: fetch .*offline or behind a proxy.*--setup-image REF"):
        await VmSetupRunner(engine).setup(PARAMS)
    assert engine.run_specs == []


async def test_explicit_image_is_pulled_only_when_missing() -> None:
    engine = FakeEngine(runs=[one_shot(KERNEL_RESULT), one_shot(KERNEL_RESULT)])
    runner = VmSetupRunner(engine, setup_image="registry.example/dmnc-setup:1")
    await runner.setup(PARAMS)
    await runner.setup(PARAMS)
    assert engine.pulled == ["registry.example/dmnc-setup:1"]
    assert engine.built == []
    assert {spec.image for spec in engine.run_specs} == {image_id_of("registry.example/dmnc-setup:1")}


async def test_pull_progress_is_relayed_without_progress_bar_updates() -> None:
    engine = FakeEngine(runs=[one_shot(KERNEL_RESULT)])
    engine.pull_messages = [
        ProgressMessage(status="Pulling from dmnc/setup", id="1"),
        ProgressMessage(status="Downloading", id="a1b2", progress="[==>   ] 1MB/9MB"),
        ProgressMessage(status="Downloading", id="a1b2", progress="[====> ] 5MB/9MB"),
        ProgressMessage(status="Pull complete", id="a1b2"),
    ]
    progress: list[str] = []
    await VmSetupRunner(engine, setup_image="ref:1", on_progress=progress.append).setup(PARAMS)
    assert progress == ["pulling the setup image ref:1", "1 Pulling from dmnc/setup", "a1b2 Pull complete"]


async def test_losing_the_daemon_during_a_build_stays_a_docker_error() -> None:
    engine = FakeEngine(lose_daemon_in_build=True)
    with pytest.raises(ConnectionLost):
        await VmSetupRunner(engine).setup(PARAMS)


async def test_failed_pull_names_the_image_and_what_to_check() -> None:
    engine = FakeEngine(fail_pull="manifest unknown")
    with pytest.raises(SetupImageError, match=r"ref:1 is not in the VM and pulling it failed: manifest unknown"):
        await VmSetupRunner(engine, setup_image="ref:1").setup(PARAMS)


async def test_a_container_the_engine_refuses_to_run_is_blamed_on_the_image_with_a_hint() -> None:
    engine = engine_with_image()
    engine.refuse_run = 'exec: "/bin/sh": stat /bin/sh: no such file or directory'
    with pytest.raises(SetupImageError, match=r"could not run: exec: \"/bin/sh\".*needs /bin/sh"):
        await VmSetupRunner(engine).setup(PARAMS)


async def test_a_fallback_that_cannot_start_is_removed_again() -> None:
    engine = engine_with_image(one_shot(KERNEL_MISSING))
    engine.refuse_start = "error gathering device information while adding custom device /dev/net/tun"
    with pytest.raises(SetupImageError, match="/dev/net/tun"):
        await VmSetupRunner(engine).setup(PARAMS)
    assert engine.removed == [FALLBACK_CONTAINER_NAME]
    assert engine.existing_containers == set()


async def test_teardown_removes_the_fallback_and_runs_the_teardown_mode() -> None:
    engine = engine_with_image(one_shot(REMOVED))
    engine.existing_containers.add(FALLBACK_CONTAINER_NAME)
    assert await VmSetupRunner(engine).teardown(PARAMS) == TeardownDone("5.10")
    assert engine.removed == [FALLBACK_CONTAINER_NAME]
    (spec,) = engine.run_specs
    assert list(spec.command or []) == script_command(PARAMS, ScriptMode.TEARDOWN, nonce=nonce_of(spec))


async def test_teardown_without_params_removes_the_defaults() -> None:
    engine = engine_with_image(one_shot(REMOVED))
    await VmSetupRunner(engine).teardown()
    (spec,) = engine.run_specs
    assert list(spec.command or []) == script_command(TeardownParams(), ScriptMode.TEARDOWN, nonce=nonce_of(spec))


async def test_answers_that_do_not_fit_the_request_are_result_errors() -> None:
    with pytest.raises(SetupResultError, match="teardown request"):
        await VmSetupRunner(engine_with_image(one_shot(KERNEL_RESULT))).teardown(PARAMS)
    with pytest.raises(SetupResultError, match="setup request"):
        await VmSetupRunner(engine_with_image(one_shot(REMOVED))).setup(PARAMS)
    engine = engine_with_image(one_shot(KERNEL_MISSING))
    engine.fallback_chunks = [KERNEL_MISSING]
    with pytest.raises(SetupResultError, match="userspace fallback answered"):
        await VmSetupRunner(engine).setup(PARAMS)


async def test_kernel_check_runs_the_check_mode_in_a_host_network_container_and_removes_no_fallback() -> None:
    engine = engine_with_image(one_shot(KERNEL_OK))
    engine.existing_containers.add(FALLBACK_CONTAINER_NAME)
    assert await VmSetupRunner(engine).check_kernel() == KernelWireGuardPresent("6.10")
    spec = engine.run_specs[0]
    assert list(spec.command or []) == script_command(TeardownParams(), ScriptMode.CHECK, nonce=nonce_of(spec))
    assert spec.network_mode == "host"
    assert list(spec.cap_add) == ["NET_ADMIN"]
    assert engine.removed == []  # a running fallback carries the tunnel: a check must not touch it


async def test_kernel_check_reports_a_kernel_without_wireguard() -> None:
    engine = engine_with_image(one_shot(KERNEL_MISSING))
    assert await VmSetupRunner(engine).check_kernel() == KernelWireGuardMissing("5.10")


async def test_kernel_check_reports_another_tools_interface() -> None:
    engine = engine_with_image(one_shot(FOREIGN))
    assert await VmSetupRunner(engine).check_kernel() == ForeignInterface("chip0", "5.10")


async def test_kernel_check_never_builds_or_pulls_a_missing_image() -> None:
    engine = FakeEngine()
    with pytest.raises(SetupImageError, match="not in the VM"):
        await VmSetupRunner(engine).check_kernel()
    with pytest.raises(SetupImageError, match="not in the VM"):
        await VmSetupRunner(engine, setup_image="example.org/setup:1").check_kernel()
    assert engine.built == []
    assert engine.pulled == []
    assert engine.run_specs == []


async def test_kernel_check_answered_with_a_setup_result_is_a_result_error() -> None:
    with pytest.raises(SetupResultError, match="kernel check"):
        await VmSetupRunner(engine_with_image(one_shot(KERNEL_RESULT))).check_kernel()


async def test_a_tag_re_pointed_after_the_inspect_does_not_change_what_runs() -> None:
    engine = engine_with_image(one_shot(KERNEL_MISSING))
    engine.repoint_after_inspect[default_setup_image()] = "attacker/image:latest"
    engine.fallback_chunks = [USERSPACE_RESULT]
    await VmSetupRunner(engine).setup(PARAMS)
    ((fallback_spec, _),) = engine.created
    assert [spec.image for spec in engine.run_specs] == [image_id_of(default_setup_image())]
    assert fallback_spec.image == image_id_of(default_setup_image())


async def test_a_built_image_runs_by_the_id_inspected_after_the_build() -> None:
    engine = FakeEngine(runs=[one_shot(KERNEL_RESULT)])
    runner = VmSetupRunner(engine)
    assert await runner.ensure_image() == image_id_of(default_setup_image())
    await runner.setup(PARAMS)
    assert [spec.image for spec in engine.run_specs] == [image_id_of(default_setup_image())]


async def test_kernel_check_runs_by_image_id() -> None:
    engine = engine_with_image(one_shot(KERNEL_OK))
    await VmSetupRunner(engine).check_kernel()
    assert [spec.image for spec in engine.run_specs] == [image_id_of(default_setup_image())]


async def test_a_bare_hex_image_id_is_normalised_to_the_sha256_form() -> None:
    engine = engine_with_image(one_shot(KERNEL_RESULT))
    engine.id_overrides[default_setup_image()] = "ab" * 32
    await VmSetupRunner(engine).setup(PARAMS)
    assert [spec.image for spec in engine.run_specs] == ["sha256:" + "ab" * 32]


@pytest.mark.parametrize(
    "answered", ["dmnc-setup:latest", "sha256:" + "AB" * 32, "sha256:abc", "", "sha512:" + "a" * 64]
)
async def test_an_image_id_that_is_not_a_sha256_digest_is_refused(answered: str) -> None:
    engine = engine_with_image(one_shot(KERNEL_RESULT))
    engine.id_overrides[default_setup_image()] = answered
    with pytest.raises(SetupImageError, match="not sha256:HEX"):
        await VmSetupRunner(engine).setup(PARAMS)
    assert engine.run_specs == []


async def test_each_container_run_gets_a_fresh_nonce() -> None:
    engine = engine_with_image(one_shot(KERNEL_MISSING), one_shot(KERNEL_RESULT))
    engine.fallback_chunks = [USERSPACE_RESULT]
    runner = VmSetupRunner(engine)
    await runner.setup(PARAMS)
    engine.created.clear()
    await runner.setup(PARAMS)
    nonces = [nonce_of(spec) for spec in engine.run_specs]
    assert len(set(nonces)) == 2
    assert all(len(nonce) == 32 and int(nonce, 16) >= 0 for nonce in nonces)


async def test_a_one_shot_result_with_another_runs_nonce_is_refused() -> None:
    stale = KERNEL_RESULT.replace(RUN_NONCE, b"0" * 32)
    with pytest.raises(SetupResultError, match="not this run's"):
        await VmSetupRunner(engine_with_image(one_shot(stale))).setup(PARAMS)


async def test_a_fallback_result_without_this_runs_nonce_is_refused() -> None:
    engine = engine_with_image(one_shot(KERNEL_MISSING))
    engine.fallback_chunks = [USERSPACE_RESULT.replace(b" nonce=" + RUN_NONCE, b"")]
    engine.hang_logs = True
    with pytest.raises(SetupResultError, match="carries no nonce"):
        await VmSetupRunner(engine).setup(PARAMS)


FOREIGN = b"dmnc-setup-result v1 nonce=@RUN-NONCE@ mode=foreign interface=chip0 kernel=5.10\n"


async def test_a_foreign_vm_interface_is_a_foreign_interface_error_and_nothing_more_runs() -> None:
    engine = engine_with_image(one_shot(FOREIGN))
    with pytest.raises(ForeignInterfaceError, match="chip0 that is not dmnc's") as caught:
        await VmSetupRunner(engine).setup(PARAMS)
    assert caught.value.interface == "chip0"
    assert len(engine.run_specs) == 1
    assert engine.created == []  # no fallback started over another tool's interface


async def test_a_teardown_that_found_a_foreign_interface_says_so() -> None:
    with pytest.raises(ForeignInterfaceError):
        await VmSetupRunner(engine_with_image(one_shot(FOREIGN))).teardown(PARAMS)
