"""Command-line entry point.

Every user-facing failure ends here as one readable line on stderr and a non-zero exit code; tracebacks are
reserved for bugs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dmnc import __version__

EXIT_OK = 0
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmnc",
        description="Reach Docker containers by IP from the host through a WireGuard tunnel into the Docker VM.",
    )
    parser.add_argument("--version", action="version", version=f"dmnc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("version", help="print the version and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"dmnc {__version__}")
        return EXIT_OK
    parser.print_help(sys.stderr)
    return EXIT_USAGE
