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
)


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
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        exit_code: int = handler(args)
    except KeyboardInterrupt:
        return 130
    return exit_code
