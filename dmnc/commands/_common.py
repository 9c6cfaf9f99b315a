"""What the subcommands share: the command table, the exit codes, the shared flags and the configuration preamble.
(Printable text, which the service needs too, is `dmnc.printable`.)

Light on purpose: every `dmnc` invocation imports it, and `dmnc version` and `dmnc status` must start fast, so it
imports neither trio nor httpx, and the command modules only by name (`build_parser`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

from dmnc import __version__
from dmnc.config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_CONTROL_SOCKET,
    Config,
    ConfigError,
    ConfigFlags,
    load_config,
    load_control_socket_path,
)

# Exit codes, the same for every command that can end that way.
EXIT_OK = 0
EXIT_FAILURE = 1
# argparse exits with 2 on a bad flag (argparse.ArgumentParser.error); a bad configuration value is the same kind of
# mistake, so it shares the code.
EXIT_USAGE = 2
EXIT_BAD_CONFIG = EXIT_USAGE
# `dmnc status` only: nothing answers on the control socket, or the user may not connect to it.
EXIT_NOT_RUNNING = 3
EXIT_PERMISSION_DENIED = 4
# The shell's convention for a process ended by a signal: 128 + its number (bash(1), EXIT STATUS).
EXIT_INTERRUPTED = 128 + signal.SIGINT

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
# service (`dmnc service install -- ARGS`) invoke it.
DEFAULT_COMMAND = "run"

# What `register(commands)` receives: the parser's subcommand table (a string annotation: subscripting the class
# itself fails at run time).
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


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


# ---------------------------------------------------------------------------------------------------------------------
# The flags several commands take, each registered here so its name, destination and meaning are the same everywhere.
# Every one is optional (None when not given): the configuration fills in the rest (flag > DMNC_* > config file).


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH", dest="config_file", help=f"config file (default {DEFAULT_CONFIG_PATH})"
    )


def add_docker_host_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docker-host", metavar="URL", help="Docker API socket, unix:///path (default: detect)")


def add_control_socket_flag(
    parser: argparse.ArgumentParser, purpose: str = "the running dmnc's control socket"
) -> None:
    parser.add_argument("--control-socket", metavar="PATH", help=f"{purpose} (default {DEFAULT_CONTROL_SOCKET})")


def add_setup_image_flag(
    parser: argparse.ArgumentParser, purpose: str = "image of the VM setup container (default: built-in)"
) -> None:
    parser.add_argument("--setup-image", metavar="REF", help=purpose)


# ---------------------------------------------------------------------------------------------------------------------
# The configuration preamble: a bad value is one line on stderr, prefixed by the command, and exit code 2.


def load_config_or_report(command: str, flags: ConfigFlags) -> Config | None:
    """The configuration (flags > DMNC_* environment > config file); None after printing why it is bad."""
    try:
        return load_config(flags, os.environ)
    except ConfigError as error:
        report_bad_config(command, error)
        return None


def load_control_socket_or_report(command: str, flag: str | None) -> Path | None:
    """The control socket path of a client command (see `load_control_socket_path`); None after printing why not."""
    try:
        return load_control_socket_path(flag, os.environ)
    except ConfigError as error:
        report_bad_config(command, error)
        return None


def report_bad_config(command: str, error: Exception | str) -> None:
    print(f"{command}: {error}", file=sys.stderr)
