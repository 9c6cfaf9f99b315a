"""`dmnc status [--json] [--follow] [--control-socket PATH]`: what the running service is doing. Needs no root.

Reads the control socket (flag > DMNC_CONTROL_SOCKET > control_socket in the config file > /var/run/dmnc.sock).
Output: a readable summary by default, one JSON object with --json (see dmnc.control.messages); with --follow, one
line per event as it happens (one JSON object per line with --json) until dmnc stops or Ctrl-C.

Exit codes: 0 success (or the followed dmnc stopped), 1 dmnc answered wrongly or not in time, 2 bad flag or
configuration, 3 dmnc is not running, 4 permission denied on the control socket.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import trio

from dmnc.commands._common import (
    EXIT_BAD_CONFIG,
    EXIT_FAILURE,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_PERMISSION_DENIED,
    Subcommands,
    add_control_socket_flag,
    load_control_socket_or_report,
)
from dmnc.control import (
    ControlError,
    ControlNotRunning,
    ControlPermissionDenied,
    fetch_snapshot,
    open_event_feed,
)
from dmnc.control.messages import DnsStatus, PathStatus, StatusEvent, StatusSnapshot, format_drops
from dmnc.logsetup import printable

_KIB = 1024


def register(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "status",
        help="show the running service: tunnel, Docker, VM and routes",
        description="Show what the running dmnc is doing. Needs no root: members of the admin group (admin, "
        "wheel or sudo) may read the control socket.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (one object; one per line with --follow)")
    parser.add_argument("--follow", action="store_true", help="print events as they happen until dmnc stops")
    add_control_socket_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = load_control_socket_or_report("dmnc status", args.control_socket)
    if path is None:
        return EXIT_BAD_CONFIG
    try:
        if args.follow:
            trio.run(_follow, path, args.json)
            print("dmnc stopped; the event feed ended", file=sys.stderr)
        else:
            snapshot = trio.run(fetch_snapshot, path)
            print(snapshot.to_json() if args.json else render_snapshot(snapshot))
    except ControlNotRunning as error:
        print(f"dmnc status: {error}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except ControlPermissionDenied as error:
        print(f"dmnc status: {error}", file=sys.stderr)
        return EXIT_PERMISSION_DENIED
    except ControlError as error:
        print(f"dmnc status: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader went away (`dmnc status --follow | head -3`): that ends the job, it is not an error. Later
        # writes (the interpreter's final flush) must not fail again, so stdout is pointed at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


async def _follow(path: Path, as_json: bool) -> None:
    async with open_event_feed(path) as feed:
        async for event in feed:
            # Flushed per event: the reader is often a pipe (`| grep`, a test) waiting for this very line.
            print(event.to_json() if as_json else render_event(event), flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Readable output


def _shown(value: str | None, missing: str = "-") -> str:
    return missing if value is None else printable(value)


def format_bytes(count: int) -> str:
    if count < _KIB:
        return f"{count} B"
    value = count / _KIB
    units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]
    while value >= _KIB and len(units) > 1:
        value /= _KIB
        units.pop(0)
    return f"{value:.1f} {units[0]}"


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def _section(title: str, rows: list[tuple[str, str]]) -> list[str]:
    return [title, *(f"  {label:<16} {value}" for label, value in rows)]


def render_snapshot(snapshot: StatusSnapshot) -> str:
    """The readable summary `dmnc status` prints."""
    tunnel, docker, vm = snapshot.tunnel, snapshot.docker, snapshot.vm
    lines = [f"dmnc {printable(snapshot.version)}", ""]
    if snapshot.standby is not None:
        lines += [f"Standby: {printable(snapshot.standby)}", ""]
    lines += _section(
        "Tunnel",
        [
            ("interface", _shown(tunnel.interface)),
            ("listening on", _shown(tunnel.listen)),
            ("peer endpoint", _shown(tunnel.endpoint, "unknown (no handshake yet)")),
            ("last handshake", format_age(tunnel.last_handshake_age_s)),
            ("received", format_bytes(tunnel.rx_bytes)),
            ("sent", format_bytes(tunnel.tx_bytes)),
            ("dropped packets", printable(format_drops(tunnel.drops))),
        ],
    )
    lines += _section(
        "Docker",
        [
            ("connected", "yes" if docker.connected else "no"),
            ("host", _shown(docker.host)),
            ("runtime", _shown(docker.runtime)),
            ("API version", _shown(docker.api_version)),
        ],
    )
    lines += _section("VM", [("setup", _shown(vm.mode, "not set up")), ("public key", _shown(vm.public_key))])
    lines += _paths_section(snapshot.paths)
    # Before Routes, whose table of any length ends the output.
    lines += _dns_section(snapshot.dns)
    lines.append("Routes")
    if not snapshot.routes:
        lines.append("  none")
    else:
        subnets = [str(route.subnet) for route in snapshot.routes]
        networks = [printable(route.network) for route in snapshot.routes]
        subnet_width = max(len("SUBNET"), *map(len, subnets))
        network_width = max(len("NETWORK"), *map(len, networks))
        lines.append(f"  {'SUBNET':<{subnet_width}}  {'NETWORK':<{network_width}}  INSTALLED")
        for subnet, network, route in zip(subnets, networks, snapshot.routes, strict=True):
            installed = "yes" if route.installed else "no"
            if not route.installed and route.decision is not None:
                installed += f" [{printable(route.decision)}]"
            if not route.installed and route.reason is not None:
                installed += f": {printable(route.reason)}"
            lines.append(f"  {subnet:<{subnet_width}}  {network:<{network_width}}  {installed}")
    return "\n".join(lines)


def _paths_section(paths: tuple[PathStatus, ...]) -> list[str]:
    """Per address family: tunnel or direct (via which address), and why; nothing from a service without paths."""
    if not paths:
        return []
    rows = []
    for path in paths:
        family = "IPv4" if path.family == "ipv4" else "IPv6"
        where = path.path if path.next_hop is None else f"direct via {path.next_hop} dev {path.interface}"
        flag = " [problem]" if path.problem else ""
        rows.append((family, printable(f"{where}{flag}: {path.reason}")))
    return _section("Path", rows)


def _dns_section(dns: DnsStatus | None) -> list[str]:
    if dns is None:
        return ["DNS", "  off (--no-dns, or an older dmnc)"]
    where = f"{', '.join(dns.addresses)} port {dns.port}" if dns.port is not None else f"not serving: {dns.problem}"
    return _section(
        "DNS",
        [
            ("domain", printable(dns.domain)),
            ("listening on", printable(where)),
            ("names", str(dns.records)),
            ("last update", format_age(dns.last_update_age_s)),
            ("host resolver", _shown(dns.host_resolver, "not configured")),
            ("dropped", printable(format_drops(dns.drops))),
        ],
    )


def render_event(event: StatusEvent) -> str:
    """One readable line per event: local time, kind, message, details."""
    try:
        when = datetime.datetime.fromtimestamp(event.time).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # a time beyond what the platform's calendar functions handle
        when = f"@{event.time:.0f}"
    details = " ".join(f"{printable(name)}={printable(json.dumps(value))}" for name, value in event.details.items())
    line = f"{when} {event.kind:<22} {printable(event.message)}"
    return f"{line} ({details})" if details else line
