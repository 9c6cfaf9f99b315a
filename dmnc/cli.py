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

# One line per subcommand module; each module owns its parser and handler.
COMMAND_MODULES = (
    "dmnc.commands.version",
    "dmnc.commands.service",
    "dmnc.commands.wg",
    "dmnc.commands.run",
    "dmnc.commands.status",
    "dmnc.commands.doctor",
    "dmnc.vm.command",
    "dmnc.docker.command",
)
# The command run when none is named: `dmnc` and `dmnc --listen ...` start the service, as users and the system
# service (`dmnc service install -- ARGS`) invoke it. Top-level -h/--help and --version keep their meaning.
DEFAULT_COMMAND = "run"
_TOP_LEVEL_FLAGS = frozenset({"-h", "--help", "--version"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmnc",
        description="Reach Docker containers by IP from the host through a WireGuard tunnel into the Docker VM.",
    )
    parser.add_argument("--version", action="version", version=f"dmnc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (arguments[0].startswith("-") and arguments[0] not in _TOP_LEVEL_FLAGS):
        arguments.insert(0, DEFAULT_COMMAND)
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
