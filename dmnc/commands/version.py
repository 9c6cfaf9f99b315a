"""`dmnc version`."""

from __future__ import annotations

import argparse

from dmnc import __version__
from dmnc.commands._common import EXIT_OK, Subcommands


def register(commands: Subcommands) -> None:
    parser = commands.add_parser("version", help="print the version and exit")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(f"dmnc {__version__}")
    return EXIT_OK
