"""Command-line entry point.

Each subcommand lives in its own module under `dmnc.commands` exposing `register(subparsers)`, which adds its
parser and sets `handler` (a function taking the parsed namespace and returning an exit code). Every user-facing
failure ends as one readable line on stderr and a non-zero exit code; tracebacks are reserved for bugs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from dmnc import __version__

EXIT_OK = 0
EXIT_USAGE = 2

# Command name -> the module that registers it; each module owns its parser and handler. Only the module of the
# command being run is imported (the others pull in trio, httpx, the tunnel...): `dmnc version` and `dmnc status`
# start in a fraction of the time. Help without a command imports them all to list them.
COMMANDS = {
    "version": "dmnc.commands.version",
    "service": "dmnc.commands.service",
    "wg": "dmnc.commands.wg",
    "run": "dmnc.commands.run",
    "status": "dmnc.commands.status",
    "doctor": "dmnc.commands.doctor",
    "vm": "dmnc.commands.vm",
    "docker": "dmnc.commands.docker",
    "uninstall": "dmnc.commands.uninstall",
}
COMMAND_MODULES = tuple(COMMANDS.values())
# The command run when none is named: `dmnc` and `dmnc --listen ...` start the service, as users and the system
# service (`dmnc service install -- ARGS`) invoke it. Top-level -h/--help and --version keep their meaning.
DEFAULT_COMMAND = "run"
_TOP_LEVEL_FLAGS = frozenset({"-h", "--help", "--version"})


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    """The parser with the subcommands of `modules` (all by default)."""
    parser = argparse.ArgumentParser(
        prog="dmnc",
        description="Reach Docker containers by IP from the host through a WireGuard tunnel into the Docker VM.",
    )
    parser.add_argument("--version", action="version", version=f"dmnc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in modules:
        importlib.import_module(module_name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (arguments[0].startswith("-") and arguments[0] not in _TOP_LEVEL_FLAGS):
        arguments.insert(0, DEFAULT_COMMAND)
    first = arguments[0]
    if first in COMMANDS:
        parser = build_parser((COMMANDS[first],))
    elif first == "--version":
        parser = build_parser(())
    else:
        parser = build_parser()
    args = parser.parse_args(arguments)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        exit_code: int = handler(args)
    except KeyboardInterrupt:
        return 130
    return exit_code
