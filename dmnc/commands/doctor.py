"""`dmnc doctor`: check every link from this host to the containers and say how to fix what is broken.

Prints one line per check, `PASS|WARN|FAIL|SKIP name: detail`, with `  fix: ...` under it where there is something
to do; with --json, one JSON object `{"checks": [{name, verdict, detail, fix}, ...], "ok": bool}` instead.

Exit codes: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 for a bad flag or configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from typing import TYPE_CHECKING

from dmnc.commands import _common as common
from dmnc.config import ConfigFlags, ValueProblem, parse_image_reference
from dmnc.logsetup import printable

if TYPE_CHECKING:
    from dmnc.doctor.checks import CheckResult


def register(commands: common.Subcommands) -> None:
    parser = commands.add_parser(
        "doctor",
        help="check Docker, the port, the VM, the tunnel and the routes, with a fix for each problem",
        description="Check each link from this host to the containers: root, the Docker socket and runtime, the UDP"
        " port, the setup image, WireGuard in the VM kernel, the running dmnc's handshake, route conflicts with VPN"
        " or LAN routes, the DNS server and a container's name through the system resolver, leftover /etc/resolver"
        " files, and (with --probe) a test container reached by IP. Run it with sudo for every check.",
    )
    common.add_docker_host_flag(parser)
    common.add_config_flag(parser)
    common.add_control_socket_flag(parser)
    common.add_setup_image_flag(parser)
    parser.add_argument(
        "--listen", metavar="ADDR[:PORT]", help="the UDP address dmnc is configured to use (default 0.0.0.0:3333)"
    )
    parser.add_argument(
        "--probe",
        metavar="IMAGE",
        help="start a container from IMAGE (it must have `sleep`) on a test network and reach it from this host",
    )
    parser.add_argument(
        "--probe-timeout",
        metavar="SECONDS",
        type=positive_seconds,
        help="how long the probe container may take to answer (default 30)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.set_defaults(handler=run)


# A day: longer is no time limit at all, and trio's deadlines must stay finite.
MAX_PROBE_TIMEOUT_S = 86400.0


def positive_seconds(text: str) -> float:
    """argparse type for --probe-timeout: a finite number of seconds in (0, MAX_PROBE_TIMEOUT_S]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= MAX_PROBE_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most {MAX_PROBE_TIMEOUT_S:g} seconds")
    return value


def run(args: argparse.Namespace) -> int:
    flags = ConfigFlags(
        config_file=args.config_file,
        docker_host=args.docker_host,
        listen=args.listen,
        setup_image=args.setup_image,
        control_socket=args.control_socket,
    )
    config = common.load_config_or_report("dmnc doctor", flags)
    if config is None:
        return common.EXIT_BAD_CONFIG
    try:
        probe_image = None if args.probe is None else parse_image_reference(args.probe)
    except ValueProblem as error:
        common.report_bad_config("dmnc doctor", f"--probe: {error}")
        return common.EXIT_BAD_CONFIG
    # Imported here: the checks pull in trio, httpx and the platform's route backend, which parsing flags never needs.
    import trio  # noqa: PLC0415

    from dmnc.doctor.checks import Verdict  # noqa: PLC0415
    from dmnc.doctor.gather import DoctorSettings, run_doctor  # noqa: PLC0415

    def print_line(result: CheckResult) -> None:
        if not args.json:
            print(render_check(result), flush=True)  # flushed per check: some take seconds, the user sees progress

    settings = DoctorSettings(config=config, is_root=os.geteuid() == 0, probe_image=probe_image)
    if args.probe_timeout is not None:
        settings = dataclasses.replace(settings, probe_timeout_s=args.probe_timeout)
    results = trio.run(run_doctor, settings, print_line)
    failed = any(result.verdict is Verdict.FAIL for result in results)
    if args.json:
        print(json.dumps({"checks": [result.to_json_object() for result in results], "ok": not failed}))
    return common.EXIT_FAILURE if failed else common.EXIT_OK


def render_check(result: CheckResult) -> str:
    """The lines `dmnc doctor` prints for one check: `VERDICT name: detail`, and `  fix: ...` under it. Details
    quote the daemon (network names, errors), so they go through `printable`."""
    line = f"{result.verdict.value} {result.name}: {printable(result.detail)}"
    return line if result.fix is None else f"{line}\n  fix: {printable(result.fix)}"
