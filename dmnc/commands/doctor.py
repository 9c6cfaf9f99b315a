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
import sys

from dmnc.config import ConfigError, ConfigFlags, ValueProblem, load_config, parse_image_reference

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "doctor",
        help="check Docker, the port, the VM, the tunnel and the routes, with a fix for each problem",
        description="Check each link from this host to the containers: root, the Docker socket and runtime, the UDP"
        " port, the setup image, WireGuard in the VM kernel, the running dmnc's handshake, route conflicts with VPN"
        " or LAN routes, and (with --probe) a test container reached by IP. Run it with sudo for every check.",
    )
    parser.add_argument("--docker-host", metavar="URL", help="Docker API socket, unix:///path (default: detect)")
    parser.add_argument("--config", metavar="PATH", dest="config_file", help="dmnc's config file")
    parser.add_argument("--control-socket", metavar="PATH", help="the running dmnc's status socket")
    parser.add_argument("--setup-image", metavar="REF", help="image of the VM setup container (default: built-in)")
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
    try:
        config = load_config(flags, os.environ)
        probe_image = None if args.probe is None else parse_image_reference(args.probe)
    except ConfigError as error:
        print(f"dmnc doctor: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except ValueProblem as error:
        print(f"dmnc doctor: --probe: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    # Imported here: the checks pull in trio, httpx and the platform's route backend, which parsing flags never needs.
    import trio  # noqa: PLC0415

    from dmnc.doctor.doctor import CheckResult, DoctorSettings, Verdict, run_doctor  # noqa: PLC0415

    def print_line(result: CheckResult) -> None:
        if not args.json:
            print(result.render(), flush=True)  # flushed per check: some take seconds, the user sees progress

    settings = DoctorSettings(config=config, is_root=os.geteuid() == 0, probe_image=probe_image)
    if args.probe_timeout is not None:
        settings = dataclasses.replace(settings, probe_timeout_s=args.probe_timeout)
    results = trio.run(run_doctor, settings, print_line)
    failed = any(result.verdict is Verdict.FAIL for result in results)
    if args.json:
        print(json.dumps({"checks": [result.to_json_object() for result in results], "ok": not failed}))
    return EXIT_FAILED if failed else EXIT_OK
