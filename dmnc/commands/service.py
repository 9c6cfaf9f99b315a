"""`dmnc service install|uninstall`: run dmnc at boot as a systemd unit (Linux) or launchd daemon (macOS)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dmnc.commands._common import COMMANDS, DEFAULT_COMMAND, EXIT_FAILURE, EXIT_OK, Subcommands, build_parser
from dmnc.system_service import (
    Action,
    RunCommand,
    ServiceError,
    ServiceManager,
    ServiceSpec,
    WriteFile,
    apply,
    check_no_homebrew_service,
    current_command,
    plan_install,
    plan_uninstall,
)

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
        _check_daemon_arguments(args.daemon_args)
        spec = ServiceSpec(program_arguments=(*command, *args.daemon_args))
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


def _check_daemon_arguments(daemon_args: list[str]) -> None:
    """Parse the daemon's arguments with dmnc's own parser, so an unknown or malformed flag fails now rather than
    in the service's restart loop. (Values are checked when the daemon loads its configuration.) The service
    starts `dmnc ARGS`, which runs DEFAULT_COMMAND: only that command's parser is needed."""
    try:
        build_parser((COMMANDS[DEFAULT_COMMAND],)).parse_args([DEFAULT_COMMAND, *daemon_args])
    except SystemExit as exit_request:  # argparse has printed the reason (or the help) already
        raise ServiceError(f"not valid arguments for the dmnc daemon: {' '.join(daemon_args)}") from exit_request


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
    if not any(isinstance(action, RunCommand) for action in actions):
        print("staged only: the service manager was not told (install under / to enable and start it)")
    return EXIT_OK
