"""`dmnc service install|uninstall`: run dmnc at boot as a systemd unit (Linux) or launchd daemon (macOS)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import dmnc
from dmnc.commands._common import (
    COMMANDS,
    DEFAULT_COMMAND,
    EXIT_FAILURE,
    EXIT_OK,
    Subcommands,
    build_parser,
)
from dmnc.commands.run import flags_from_args
from dmnc.config import ConfigError, ConfigFlags, load_config
from dmnc.logsetup import printable
from dmnc.system_service import (
    Action,
    RemoveFile,
    ServiceError,
    ServiceManager,
    ServiceSpec,
    WriteFile,
    apply,
    check_no_homebrew_service,
    code_trust_problems,
    current_command,
    plan_install,
    plan_uninstall,
    service_code_paths,
)

if TYPE_CHECKING:  # the module pulls in trio and httpx, which the rest of `dmnc service` never needs
    from dmnc.docker.address import DaemonAddress

REAL_ROOT = Path("/")


def register(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "service",
        help="install or remove the dmnc system service (systemd on Linux, launchd on macOS)",
        description="Install or remove the dmnc system service (systemd on Linux, launchd on macOS).",
    )
    actions = parser.add_subparsers(dest="service_action", metavar="ACTION", required=True)

    install = actions.add_parser(
        "install",
        help="write the service file, then enable and start the service",
        description="Write the service file, then enable and start the service. Arguments after `--` are passed "
        "to the dmnc daemon, e.g. `dmnc service install -- --log-level debug`.",
    )
    _add_common_flags(install)
    install.add_argument(
        "--executable",
        type=Path,
        metavar="PATH",
        help="absolute path of the dmnc the service runs (default: the dmnc running this command)",
    )
    install.add_argument("daemon_args", nargs="*", metavar="DAEMON_ARG", help="extra arguments for the daemon")
    install.set_defaults(handler=run_install)

    uninstall = actions.add_parser(
        "uninstall",
        help="stop and disable the service, then remove its file",
        description="Stop and disable the service, then remove its file.",
    )
    _add_common_flags(uninstall)
    uninstall.set_defaults(handler=run_uninstall)


def _add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="print what would be written and run; change nothing")
    parser.add_argument(
        "--root",
        type=Path,
        default=REAL_ROOT,
        metavar="DIR",
        help="install under DIR instead of / (for packaging and tests); the service manager is not touched",
    )
    parser.add_argument(
        "--manager",
        choices=[manager.value for manager in ServiceManager],
        help="service manager to write for (default: systemd on Linux, launchd on macOS); another platform's "
        "needs --root or --dry-run",
    )


def run_install(args: argparse.Namespace) -> int:
    try:
        manager = _manager(args)
        executable: Path | None = args.executable
        command = current_command() if executable is None else (str(executable),)
        daemon_flags = _check_daemon_arguments(args.daemon_args)
        daemon_args: list[str] = args.daemon_args
        if _activates(args) and not args.dry_run:
            daemon_args = _with_pinned_docker_host(daemon_args, daemon_flags)
        spec = ServiceSpec(program_arguments=(*command, *daemon_args))
        _check_root_owned_code(spec, args, from_source=executable is None and not getattr(sys, "frozen", False))
        check_no_homebrew_service(manager, root=args.root)
        actions = plan_install(manager, spec, root=args.root, activate=_activates(args), chown=os.geteuid() == 0)
        return _carry_out(actions, args)
    except ServiceError as error:
        print(f"dmnc service install: {error}", file=sys.stderr)
        return EXIT_FAILURE


def run_uninstall(args: argparse.Namespace) -> int:
    try:
        manager = _manager(args)
        actions = plan_uninstall(manager, root=args.root, activate=_activates(args))
        return _carry_out(actions, args)
    except ServiceError as error:
        print(f"dmnc service uninstall: {error}", file=sys.stderr)
        return EXIT_FAILURE


def _check_daemon_arguments(daemon_args: list[str]) -> ConfigFlags:
    """Parse the daemon's arguments with dmnc's own parser, so an unknown or malformed flag fails now rather than
    in the service's restart loop. (Values are checked when the daemon loads its configuration.) The service
    starts `dmnc ARGS`, which runs DEFAULT_COMMAND: only that command's parser is needed."""
    try:
        parsed = build_parser((COMMANDS[DEFAULT_COMMAND],)).parse_args([DEFAULT_COMMAND, *daemon_args])
    except SystemExit as exit_request:  # argparse has printed the reason (or the help) already
        raise ServiceError(f"not valid arguments for the dmnc daemon: {' '.join(daemon_args)}") from exit_request
    return flags_from_args(parsed)


def _with_pinned_docker_host(daemon_args: list[str], flags: ConfigFlags) -> list[str]:
    """`daemon_args` plus `--docker-host` for the daemon discovery finds now, unless the service's flags or root's
    config file name one already.

    The service runs as root with no desktop user behind it: left to discover, it would follow whatever Docker
    context the logged-in user selects later. Pinned in the root-owned service file, only root can change it.
    Only a Unix socket is pinned: a tcp:// daemon from a user's context stays the user's choice, not root's.
    """
    try:
        configured = load_config(flags, {}).docker_host
    except ConfigError as error:
        raise ServiceError(str(error)) from None
    if configured is not None:
        return daemon_args
    found = discover_docker_endpoint()
    if isinstance(found, str):
        print(f"dmnc service install: warning: {found}; the service will look for Docker each time it starts")
        return daemon_args
    print(f"using the Docker daemon found now for the service: {found.url} (pass --docker-host after -- to change)")
    return [*daemon_args, "--docker-host", found.url]


def discover_docker_endpoint() -> DaemonAddress | str:
    """The Unix socket of the Docker daemon discovery finds, or why there is none to pin."""
    # Imported here: discovery pulls in trio and httpx, which the rest of `dmnc service` never needs.
    import trio  # noqa: PLC0415

    from dmnc.docker.discovery import discover_endpoint  # noqa: PLC0415
    from dmnc.docker.errors import DockerError  # noqa: PLC0415

    try:
        endpoint = trio.run(discover_endpoint)
    except DockerError as error:
        return f"no Docker daemon found now ({printable(str(error))})"
    if endpoint.address.socket_path is None:
        return f"Docker was found at {printable(endpoint.address.url)}, not a Unix socket: pass --docker-host to pin it"
    return endpoint.address


def _check_root_owned_code(spec: ServiceSpec, args: argparse.Namespace, *, from_source: bool) -> None:
    """Refuse a real install whose code a non-root user could change; staging and dry runs only warn (a package
    manager's test stages into a user-owned prefix)."""
    package_folder = Path(dmnc.__file__).parent if from_source else None
    problems = code_trust_problems(service_code_paths(spec.program_arguments, package_folder=package_folder))
    if not problems:
        return
    if _activates(args) and not args.dry_run:
        raise ServiceError(problems[0])
    for problem in problems:
        print(f"dmnc service install: warning: {problem}", file=sys.stderr)


def _manager(args: argparse.Namespace) -> ServiceManager:
    manager = ServiceManager.for_platform() if args.manager is None else ServiceManager(args.manager)
    if args.root == REAL_ROOT and not args.dry_run:
        if manager is not ServiceManager.for_platform():
            raise ServiceError(f"{manager.value} is not this platform's service manager: use --root DIR or --dry-run")
        if os.geteuid() != 0:
            raise ServiceError("needs root to write system service files: run it with sudo")
    return manager


def _activates(args: argparse.Namespace) -> bool:
    """Only a real install registers with the service manager; a staged one just writes files."""
    root: Path = args.root
    return root == REAL_ROOT


def _carry_out(actions: list[Action], args: argparse.Namespace) -> int:
    if args.dry_run:
        for action in actions:
            print(f"would {action.describe()}")
            if isinstance(action, WriteFile):
                print(action.content.decode(), end="" if action.content.endswith(b"\n") else "\n")
        return EXIT_OK
    for line in apply(actions):
        print(line)
    if all(isinstance(action, WriteFile | RemoveFile) for action in actions):
        print("staged only: the service manager was not told (install under / to enable and start it)")
    return EXIT_OK
