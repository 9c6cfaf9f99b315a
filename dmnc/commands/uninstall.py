"""`dmnc uninstall`: remove everything dmnc ever created, and say what was removed.

In order: the system service (stopping it makes the daemon remove its routes and VM side itself); then, if no dmnc
is still running, the VM side (chip0, its iptables rules, the userspace fallback container) and the setup images
`dmnc-setup:*`, through the Docker API; last a control socket file and /etc/resolver/<domain> files (macOS)
left by a killed dmnc. Host routes need no step:
they die with dmnc's tunnel interface. The config file (/etc/dmnc/config.toml) is the user's and stays.

Exit codes: 0 everything removed (or nothing was there), 1 something could not be removed (each such line says why
and what to do), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dmnc.commands import _common as common
from dmnc.config import Config, ConfigFlags

REAL_ROOT = Path("/")
SETUP_IMAGE_REPOSITORY = "dmnc-setup"
# A stopped service's daemon closes its control socket as the last step of its shutdown. The service manager's stop
# has already waited for the process (systemctl stop; the launchd plan waits for the label to go), so this only
# covers the gap between the two; the socket check that follows reports a daemon that is still there.
CONTROL_SOCKET_GONE_WAIT_S = 10.0
CONTROL_SOCKET_POLL_S = 0.1


def register(commands: common.Subcommands) -> None:
    parser = commands.add_parser(
        "uninstall",
        help="remove everything dmnc created: service, VM side, setup images",
        description="Remove the dmnc system service, the VM side (chip0, its firewall rules, the userspace "
        "fallback container) and the setup images, and print what was removed. Needs root. The config file stays.",
    )
    common.add_docker_host_flag(parser)
    common.add_config_flag(parser)
    common.add_control_socket_flag(parser, "control socket of the dmnc to look for")
    common.add_setup_image_flag(parser, "the setup image dmnc ran with, if not its own")
    parser.add_argument(
        "--root",
        type=Path,
        default=REAL_ROOT,
        metavar="DIR",
        help="look for service files under DIR instead of / (for tests); the service manager is not touched",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("dmnc uninstall: needs root (service files, the Docker socket): run it with sudo", file=sys.stderr)
        return common.EXIT_FAILURE
    flags = ConfigFlags(
        config_file=args.config_file,
        docker_host=args.docker_host,
        control_socket=args.control_socket,
        setup_image=args.setup_image,
    )
    config = common.load_config_or_report("dmnc uninstall", flags)
    if config is None:
        return common.EXIT_BAD_CONFIG
    import trio  # noqa: PLC0415 (heavy; only this command's handler needs it)

    problems, stopped = _remove_service(args.root)
    if stopped and not wait_until_nothing_listens(config.control_socket, CONTROL_SOCKET_GONE_WAIT_S):
        print(f"control socket: {config.control_socket} still answers {CONTROL_SOCKET_GONE_WAIT_S:g} s after the stop")
    problems += trio.run(_remove_runtime_state, config, args.root)
    if problems:
        print(f"dmnc uninstall: {problems} item(s) could not be removed, see above", file=sys.stderr)
        return common.EXIT_FAILURE
    print("dmnc uninstall: done")
    return common.EXIT_OK


def _remove_service(root: Path) -> tuple[int, bool]:
    """Stop and remove the service: (problems, whether a service manager was told to stop it)."""
    from dmnc.system_service import ServiceError, ServiceManager, apply, plan_uninstall, staged_path  # noqa: PLC0415

    manager = ServiceManager.for_platform()
    if not staged_path(root, manager.service_path).exists():
        print(f"service: none installed ({manager.service_path})")
        return 0, False
    activate = root == REAL_ROOT
    try:
        for line in apply(plan_uninstall(manager, root=root, activate=activate)):
            print(f"service: {line}")
    except ServiceError as error:
        print(f"service: {error}", file=sys.stderr)
        return 1, activate
    return 0, activate


def wait_until_nothing_listens(
    path: Path,
    timeout_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait until no daemon listens on the control socket `path` (gone, or a stale file that refuses connections);
    False when one still does after `timeout_s`."""
    deadline = clock() + timeout_s
    while _listens(path):
        if clock() >= deadline:
            return False
        sleep(CONTROL_SOCKET_POLL_S)
    return True


def _listens(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(os.fsencode(path))
        except OSError:  # ENOENT: gone; ECONNREFUSED: stale; anything else: not a dmnc to wait for
            return False
    return True


async def _remove_runtime_state(config: Config, root: Path) -> int:
    from dmnc.control import ControlError, fetch_snapshot  # noqa: PLC0415

    try:
        snapshot = await fetch_snapshot(config.control_socket)
    except ControlError:
        snapshot = None
    if snapshot is not None:
        print(
            f"dmnc {snapshot.version} is still running (control socket {config.control_socket}): stop it"
            " (Ctrl-C, or SIGTERM) and run `sudo dmnc uninstall` again",
            file=sys.stderr,
        )
        return 1
    problems = await _remove_vm_side(config)
    if config.control_socket.is_socket():
        config.control_socket.unlink(missing_ok=True)
        print(f"control socket: removed the stale {config.control_socket}")
    return problems + remove_resolver_leftovers(root)


def remove_resolver_leftovers(root: Path) -> int:
    """macOS /etc/resolver/<domain> files a killed dmnc left (only files carrying dmnc's marker)."""
    from dmnc.dns.resolver_files import leftover_resolver_files, remove_resolver_file  # noqa: PLC0415

    problems = 0
    for path in leftover_resolver_files(root):
        try:
            remove_resolver_file(path)
        except OSError as error:
            print(f"resolver file: cannot remove {path}: {error.strerror}", file=sys.stderr)
            problems += 1
        else:
            print(f"resolver file: removed the stale {path}")
    return problems


async def _remove_vm_side(config: Config) -> int:
    from dmnc.docker.client import DockerClient  # noqa: PLC0415
    from dmnc.docker.discovery import discover_endpoint  # noqa: PLC0415
    from dmnc.docker.errors import DockerError  # noqa: PLC0415
    from dmnc.vm.errors import VmSetupError  # noqa: PLC0415
    from dmnc.vm.runner import VmSetupRunner  # noqa: PLC0415

    try:
        docker_host = None if config.docker_host is None else config.docker_host.url
        endpoint = await discover_endpoint(docker_host)
        async with DockerClient.connect(endpoint.address) as docker:
            images = await docker.list_images(SETUP_IMAGE_REPOSITORY)
            tags = sorted(tag for image in images for tag in image.repo_tags if tag.startswith(SETUP_IMAGE_REPOSITORY))
            if tags or config.setup_image is not None:
                # The teardown runs the setup image itself: it must come before the images go.
                runner = VmSetupRunner(docker, setup_image=config.setup_image or (tags[-1] if tags else None))
                done = await runner.teardown()
                print(f"VM side: removed chip0, its rules and any userspace fallback (kernel {done.kernel_release})")
            else:
                print(
                    "VM side: no dmnc setup image in the VM, so dmnc never configured it (if it ran with"
                    " --setup-image REF, pass the same here)"
                )
            for tag in tags:
                await docker.remove_image(tag)
                print(f"setup image: removed {tag}")
    except (DockerError, VmSetupError) as error:
        print(
            f"VM side: not removed ({error}). Start Docker and run `sudo dmnc uninstall` again, or `dmnc vm teardown`",
            file=sys.stderr,
        )
        return 1
    return 0
