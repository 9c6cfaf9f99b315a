"""`dmnc vm teardown` and `dmnc vm image`: the VM side by hand, without running the service.

`teardown` removes chip0, every rule the setup added and the userspace fallback container from the Docker VM, e.g.
after `--keep-vm-config` or an uninstall. `image` makes sure the setup image exists (builds `dmnc-setup:<version>`
or pulls `--setup-image REF`), e.g. to prepare a machine before going offline. Both read `--docker-host` and
`--setup-image` like `dmnc run` (flag > DMNC_* environment > config file) and discover the daemon otherwise.
Neither needs root: only access to the Docker socket. Exit codes: 0 done, 1 failed (one line on stderr), 2 bad
configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from dmnc.commands import _common as common
from dmnc.config import Config, ConfigFlags
from dmnc.vm.errors import VmSetupError

if TYPE_CHECKING:
    from dmnc.vm.runner import VmSetupRunner


def register(commands: common.Subcommands) -> None:
    parser = commands.add_parser("vm", help="set up or clean up the Docker VM side by hand (teardown, image)")
    actions = parser.add_subparsers(dest="vm_command", metavar="ACTION", required=True)
    teardown = actions.add_parser(
        "teardown", help="remove chip0, dmnc's iptables rules and the userspace fallback container from the VM"
    )
    image = actions.add_parser("image", help="build (or pull, with --setup-image) the VM setup image now")
    for action, handler in ((teardown, run_teardown), (image, run_image)):
        common.add_docker_host_flag(action)
        common.add_setup_image_flag(action)
        common.add_config_flag(action)
        action.set_defaults(handler=handler)


def run_teardown(args: argparse.Namespace) -> int:
    async def teardown(runner: VmSetupRunner) -> str:
        done = await runner.teardown()
        return f"dmnc: removed chip0, its rules and any userspace fallback from the VM (kernel {done.kernel_release})"

    return _run(args, teardown)


def run_image(args: argparse.Namespace) -> int:
    async def image(runner: VmSetupRunner) -> str:
        image_id = await runner.ensure_image()
        # The ID is what dmnc runs (a tag can be re-pointed): printed so it can be compared with `docker images`.
        return f"dmnc: setup image {runner.image} is ready: {image_id}"

    return _run(args, image)


def _run(args: argparse.Namespace, action: Callable[[VmSetupRunner], Awaitable[str]]) -> int:
    flags = ConfigFlags(config_file=args.config_file, docker_host=args.docker_host, setup_image=args.setup_image)
    config = common.load_config_or_report("dmnc", flags)
    if config is None:
        return common.EXIT_BAD_CONFIG
    # Imported here, not at the top: every `dmnc` invocation registers this command, and `dmnc status` must stay
    # light; only these actions need trio, httpx and the Docker client.
    import trio  # noqa: PLC0415

    from dmnc.docker.errors import DockerError  # noqa: PLC0415

    try:
        summary = trio.run(_with_runner, config, action)
    except (DockerError, VmSetupError) as error:
        print(f"dmnc: {error}", file=sys.stderr)
        return common.EXIT_FAILURE
    print(summary)
    return common.EXIT_OK


async def _with_runner(config: Config, action: Callable[[VmSetupRunner], Awaitable[str]]) -> str:
    from dmnc.docker.client import DockerClient  # noqa: PLC0415
    from dmnc.docker.discovery import discover_endpoint  # noqa: PLC0415
    from dmnc.vm.runner import VmSetupRunner  # noqa: PLC0415

    address = config.docker_host if config.docker_host is not None else (await discover_endpoint()).address
    async with DockerClient.connect(address) as docker:
        runner = VmSetupRunner(docker, setup_image=config.setup_image, on_progress=_print_progress)
        return await action(runner)


def _print_progress(text: str) -> None:
    print(text, file=sys.stderr)
