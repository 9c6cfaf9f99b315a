"""Runs the VM-side setup through the Docker Engine API: image, one-shot setup container, userspace fallback, teardown.

    runner = VmSetupRunner(docker, setup_image=None, on_progress=print)
    result = await runner.setup(params)      # SetupResult: mode kernel|userspace, VM public key, endpoint, kernel
    await runner.teardown(params)            # removes the fallback container, chip0 and every rule

Image: by default `dmnc-setup:<dmnc version>`, built from the embedded Dockerfile only when that tag is missing;
with `setup_image` the given reference is used (pulled when missing). Build and pull output goes to `on_progress`.
The reference is inspected once and every container is created from the image ID that answer names: a tag can be
re-pointed by anyone with access to the engine at any moment, an ID (the digest of the image's config) cannot, so
what runs with NET_ADMIN in the VM's network is the image dmnc looked at.

Setup: the fallback container of an earlier run is removed first (a kernel chip0 cannot be created over its TUN, and a
new fallback must carry the new parameters); then the one-shot container (`--net=host`, NET_ADMIN) runs the script,
its output is collected and the container removed. When the script reports that the VM kernel has no WireGuard,
the long-running fallback container (wireguard-go, /dev/net/tun, restart policy unless-stopped) is started and its
result line read from its logs.

Errors: VmSetupError subclasses for everything about the setup itself (SetupImageError, SetupScriptError,
SetupResultError, ForeignInterfaceError when the VM's interface is another tool's and was left alone, and
VmSetupError for time limits); dmnc.docker.errors.DockerError when the daemon itself fails.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Protocol

import trio

from dmnc import __version__
from dmnc.docker.buildcontext import build_context_tar
from dmnc.docker.client import ContainerRun, ContainerSpec
from dmnc.docker.errors import ApiError, NotFound, OperationFailed
from dmnc.docker.models import ContainerInfo, CreatedContainer, ImageInfo, ProgressMessage
from dmnc.docker.streams import OutputChunk, OutputTail, StreamKind
from dmnc.vm.assets import dockerfile
from dmnc.vm.errors import ForeignInterfaceError, SetupImageError, SetupResultError, VmSetupError
from dmnc.vm.params import ScriptMode, SetupParams, TeardownParams, new_run_nonce, script_command
from dmnc.vm.result import (
    RESULT_PREFIX,
    ForeignInterface,
    KernelWireGuardMissing,
    KernelWireGuardPresent,
    ScriptOutcome,
    SetupResult,
    TeardownDone,
    outcome_from_output_untrusted,
)

SETUP_IMAGE_REPOSITORY = "dmnc-setup"
FALLBACK_CONTAINER_NAME = "dmnc-wireguard-go"
ROLE_LABEL = "dev.dmnc.role"
VERSION_LABEL = "dev.dmnc.version"
# Generous: a first run on a slow VM starts a container in seconds; the script itself takes well under one.
DEFAULT_RUN_TIMEOUT_S = 120.0
# Restarted with the Docker daemon and the VM (Resource Saver, reboots) until dmnc removes it.
FALLBACK_RESTART_POLICY = "unless-stopped"
TUN_DEVICE = "/dev/net/tun"
_ERROR_MARKER = b"dmnc-setup: error: "
# The fallback container's output read while waiting for its result line: the script prints a few lines before it,
# wireguard-go a few more; anything past this is kept only as its tail.
MAX_FALLBACK_OUTPUT_BYTES = 64 << 10
# An image ID is the SHA-256 digest of the image's config, `sha256:` and 64 lowercase hex digits (Docker Engine API,
# ImageInspect `Id`; the OCI image spec's descriptor digest). Podman's compatible API answers the same form; a bare
# 64-hex ID is accepted too, since the engine refuses 64-hex repository names and so cannot confuse it with a tag.
_IMAGE_ID = re.compile(r"(?:sha256:)?([0-9a-f]{64})")

ProgressCallback = Callable[[str], None]


class SetupEngine(Protocol):
    """The Engine API calls the runner makes: what dmnc.docker.client.DockerClient offers (and test fakes)."""

    async def inspect_image(self, image: str) -> ImageInfo: ...

    def build_image(
        self, context_tar: bytes, tag: str, *, labels: Mapping[str, str] | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[ProgressMessage]]: ...

    def pull_image(self, reference: str) -> AbstractAsyncContextManager[AsyncIterator[ProgressMessage]]: ...

    async def run_container(self, spec: ContainerSpec, *, name: str | None = None) -> ContainerRun: ...

    async def create_container(self, spec: ContainerSpec, *, name: str | None = None) -> CreatedContainer: ...

    async def start_container(self, container: str) -> None: ...

    async def inspect_container(self, container: str) -> ContainerInfo: ...

    async def remove_container(self, container: str, *, force: bool = False) -> None: ...

    def container_logs(
        self, container: str, *, follow: bool = False, tty: bool | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[OutputChunk]]: ...


def default_setup_image() -> str:
    """The image dmnc builds for itself: one tag per dmnc version, so an upgrade rebuilds it."""
    return f"{SETUP_IMAGE_REPOSITORY}:{__version__}"


class VmSetupRunner:
    """Drives the VM side of the tunnel through one connected Engine API client (a DockerClient)."""

    def __init__(
        self,
        docker: SetupEngine,
        *,
        setup_image: str | None = None,
        fallback_name: str = FALLBACK_CONTAINER_NAME,
        run_timeout: float = DEFAULT_RUN_TIMEOUT_S,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self._docker = docker
        self._explicit_image = setup_image
        self.fallback_name = fallback_name
        self._run_timeout = run_timeout
        self._on_progress = on_progress

    @property
    def image(self) -> str:
        return self._explicit_image if self._explicit_image is not None else default_setup_image()

    async def ensure_image(self) -> str:
        """Make sure the setup image exists in the VM's engine (build or pull it when missing); return its image ID,
        which every container of this runner is then created from."""
        image = self.image
        try:
            return await self._image_id(image)
        except NotFound:
            pass
        if self._explicit_image is not None:
            await self._pull(image)
        else:
            await self._build(image)
        try:
            return await self._image_id(image)
        except NotFound:
            raise SetupImageError(f"the setup image {image} is still missing after it was built or pulled") from None

    async def _image_id(self, image: str) -> str:
        """The ID the engine's inspect answer gives for `image` (NotFound when it has none)."""
        answered = (await self._docker.inspect_image(image)).id
        match = _IMAGE_ID.fullmatch(answered)
        if match is None:
            raise SetupImageError(f"the engine gave the setup image {image} the ID {answered[:80]!r}, not sha256:HEX")
        return f"sha256:{match[1]}"

    async def setup(self, params: SetupParams) -> SetupResult:
        """Configure the VM end (kernel chip0, or the userspace fallback when the kernel lacks WireGuard)."""
        image_id = await self.ensure_image()
        await self._remove_fallback()
        outcome = await self._run_one_shot(image_id, params, ScriptMode.SETUP)
        if isinstance(outcome, SetupResult):
            return outcome
        if isinstance(outcome, ForeignInterface):
            raise ForeignInterfaceError(outcome.interface)
        if isinstance(outcome, KernelWireGuardMissing):
            self._progress(f"VM kernel {outcome.kernel_release} has no WireGuard: starting the userspace fallback")
            return await self._start_fallback(image_id, params)
        raise SetupResultError(f"the setup script answered {outcome!r} to a setup request")

    async def teardown(self, params: SetupParams | TeardownParams | None = None) -> TeardownDone:
        """Remove the fallback container, chip0 and every rule the setup added (idempotent). Without params, the
        defaults (chip0, 10.33.33.1, fd33:33:33::1) are torn down."""
        image_id = await self.ensure_image()
        await self._remove_fallback()
        if params is None:
            params = TeardownParams()
        outcome = await self._run_one_shot(image_id, params, ScriptMode.TEARDOWN)
        if isinstance(outcome, ForeignInterface):
            raise ForeignInterfaceError(outcome.interface)
        if not isinstance(outcome, TeardownDone):
            raise SetupResultError(f"the setup script answered {outcome!r} to a teardown request")
        return outcome

    async def check_kernel(self) -> KernelWireGuardPresent | KernelWireGuardMissing | ForeignInterface:
        """Whether the VM kernel can create WireGuard links, tested in a one-shot container that changes nothing
        lasting; ForeignInterface first when the VM's interface is another tool's. Uses the setup image as it is: a
        missing image is a SetupImageError, never a build or pull."""
        try:
            image_id = await self._image_id(self.image)
        except NotFound:
            raise SetupImageError(f"the setup image {self.image} is not in the VM") from None
        outcome = await self._run_one_shot(image_id, TeardownParams(), ScriptMode.CHECK)
        if not isinstance(outcome, KernelWireGuardPresent | KernelWireGuardMissing | ForeignInterface):
            raise SetupResultError(f"the setup script answered {outcome!r} to a kernel check")
        return outcome

    # --- image ------------------------------------------------------------------------------------------------

    async def _build(self, image: str) -> None:
        self._progress(f"building the setup image {image}")
        context = build_context_tar({"Dockerfile": dockerfile()})
        try:
            async with self._docker.build_image(context, image, labels={VERSION_LABEL: __version__}) as build:
                await self._relay(build)
        except (ApiError, OperationFailed) as error:
            # The daemon answered and refused (or the build itself failed); a lost daemon stays a DockerError.
            raise SetupImageError(
                f"building the setup image {image} failed: {error}. The VM needs to download Alpine packages for it:"
                " offline or behind a proxy? Configure the Docker daemon's proxy, or pass --setup-image REF with an"
                " image that has ip, wg, wireguard-go and iptables (see dmnc/vm/Dockerfile)"
            ) from error

    async def _pull(self, image: str) -> None:
        self._progress(f"pulling the setup image {image}")
        try:
            async with self._docker.pull_image(image) as pull:
                await self._relay(pull)
        except (ApiError, OperationFailed) as error:
            raise SetupImageError(
                f"the setup image {image} is not in the VM and pulling it failed: {error}."
                " Check the reference and the Docker daemon's registry access (proxy? login?)"
            ) from error

    async def _relay(self, stream: AsyncIterator[ProgressMessage]) -> None:
        async for message in stream:
            if message.progress:
                # Download/extract progress bars update many times a second per layer: not worth a log line each.
                continue
            text = (message.stream or " ".join(part for part in (message.id, message.status) if part)).strip()
            if text:
                self._progress(text)

    # --- containers -------------------------------------------------------------------------------------------

    def _spec(
        self, image_id: str, params: SetupParams | TeardownParams, mode: ScriptMode, role: str, nonce: str
    ) -> ContainerSpec:
        return ContainerSpec(
            image=image_id,
            # The image's own entrypoint would wrap our command; the script runs with /bin/sh directly.
            entrypoint=[],
            command=script_command(params, mode, nonce=nonce),
            labels=self._labels(role),
            network_mode="host",
            cap_add=["NET_ADMIN"],
        )

    def _labels(self, role: str) -> Mapping[str, str]:
        return {ROLE_LABEL: role, VERSION_LABEL: __version__}

    async def _run_one_shot(
        self, image_id: str, params: SetupParams | TeardownParams, mode: ScriptMode
    ) -> ScriptOutcome:
        nonce = new_run_nonce()
        spec = self._spec(image_id, params, mode, role=f"vm-{mode.value}", nonce=nonce)
        with trio.move_on_after(self._run_timeout) as scope, _container_start_errors(self.image):
            run = await self._docker.run_container(spec)
        if scope.cancelled_caught:
            raise VmSetupError(f"the VM {mode.value} container did not finish within {self._run_timeout:g} s")
        # run_container read this output from the container its own create call returned, and removed it.
        return outcome_from_output_untrusted(run.stdout + b"\n" + run.stderr, run.exit_code, nonce=nonce)

    async def _start_fallback(self, image_id: str, params: SetupParams) -> SetupResult:
        # A restart by the engine repeats the same argv, so a restarted fallback echoes this nonce too.
        nonce = new_run_nonce()
        spec = dataclasses.replace(
            self._spec(image_id, params, ScriptMode.USERSPACE, role="userspace-fallback", nonce=nonce),
            devices=[TUN_DEVICE],
            restart_policy=FALLBACK_RESTART_POLICY,
        )
        with _container_start_errors(self.image):
            created = await self._docker.create_container(spec, name=self.fallback_name)
            try:
                await self._docker.start_container(created.id)
            except ApiError:
                # A created but unstartable fallback would be retried by its restart policy at the next VM boot.
                with trio.CancelScope(shield=True):
                    await self._remove_fallback()
                raise
        tail = OutputTail(MAX_FALLBACK_OUTPUT_BYTES)
        with trio.move_on_after(self._run_timeout) as scope:
            async with self._docker.container_logs(created.id, follow=True, tty=False) as logs:
                async for chunk in logs:
                    if chunk.stream in (StreamKind.STDOUT, StreamKind.STDERR):
                        tail.append(chunk.data)
                    if _has_final_line(bytes(tail)):
                        break
        output = bytes(tail)
        if _has_final_line(output):
            return self._require_setup_result(outcome_from_output_untrusted(output, None, nonce=nonce))
        state = (await self._docker.inspect_container(created.id)).state
        if not state.running:
            return self._require_setup_result(outcome_from_output_untrusted(output, state.exit_code, nonce=nonce))
        if scope.cancelled_caught:
            raise VmSetupError(f"the userspace fallback container printed no result within {self._run_timeout:g} s")
        # Its log stream ended, yet it runs: it exited and its restart policy started it again.
        last_line = output.decode(errors="replace").strip().rpartition("\n")[2][:200] or "no output"
        raise VmSetupError(f"the userspace fallback container restarted before printing a result (last: {last_line})")

    @staticmethod
    def _require_setup_result(outcome: object) -> SetupResult:
        if not isinstance(outcome, SetupResult):
            raise SetupResultError(f"the userspace fallback answered {outcome!r}")
        return outcome

    async def _remove_fallback(self) -> None:
        try:
            await self._docker.remove_container(self.fallback_name, force=True)
        except NotFound:
            return

    def _progress(self, text: str) -> None:
        if self._on_progress is not None:
            self._on_progress(text)


@contextmanager
def _container_start_errors(image: str) -> Iterator[None]:
    """The daemon refusing to create or start a setup container is almost always about the image (no /bin/sh, wrong
    platform) or the engine's policy (capabilities, devices): say so, instead of a bare API error."""
    try:
        yield
    except ApiError as error:
        raise SetupImageError(
            f"the VM setup container from {image} could not run: {error}. A --setup-image needs /bin/sh and the"
            " tools of dmnc/vm/Dockerfile, and the engine must allow NET_ADMIN and --net=host"
        ) from error


def _has_final_line(output: bytes | bytearray) -> bool:
    """A complete result or error line has arrived."""
    return any(
        line.endswith(b"\n") and (line.startswith(RESULT_PREFIX.encode() + b" ") or line.startswith(_ERROR_MARKER))
        for line in bytes(output).splitlines(keepends=True)
    )
