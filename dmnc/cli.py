"""Command-line entry point.

Each subcommand lives in its own module under `dmnc.commands` exposing `register(subparsers)`, which adds its
parser and sets `handler` (a function taking the parsed namespace and returning an exit code); the table of them is
`dmnc.commands._common.COMMANDS`. Every user-facing failure ends as one readable line on stderr and a non-zero exit
code; tracebacks are reserved for bugs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dmnc.commands._common import (
    COMMAND_MODULES,
    COMMANDS,
    DEFAULT_COMMAND,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    build_parser,
)

__all__ = ["COMMANDS", "COMMAND_MODULES", "DEFAULT_COMMAND", "build_parser", "main"]

# Top-level -h/--help and --version keep their meaning; any other leading flag belongs to DEFAULT_COMMAND.
_TOP_LEVEL_FLAGS = frozenset({"-h", "--help", "--version"})


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
        return EXIT_INTERRUPTED
    return exit_code
