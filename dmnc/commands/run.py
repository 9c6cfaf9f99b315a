"""`dmnc run` (also plain `dmnc`): the tunnel service in the foreground, configured by flags, env and file.

Exit codes: 0 after an orderly shutdown, 1 when the service cannot run (not root, a failure it cannot recover
from), 2 for a bad flag or configuration value.
"""

from __future__ import annotations

import argparse
import os
import sys

from dmnc.commands import _common as common
from dmnc.config import DEFAULT_CONFIG_PATH, ConfigFlags
from dmnc.hardening.process import HardeningError, forbid_core_dumps
from dmnc.logsetup import LogLevel, setup_logging

NOT_ROOT_MESSAGE = (
    "dmnc: must run as root: it creates a network interface and routes and opens the Docker socket. Try: sudo dmnc"
)


def register(commands: common.Subcommands) -> None:
    parser = commands.add_parser(
        "run",
        help="run the tunnel service in the foreground (the default when no command is given)",
        description="Run the tunnel service in the foreground with readable logs; needs root. Every flag can also "
        f"be set by a DMNC_* environment variable or in the config file ({DEFAULT_CONFIG_PATH}); flags win over "
        "the environment, which wins over the file.",
    )
    add_run_flags(parser)
    parser.set_defaults(handler=run)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The CLI contract's flags of the service; every one is optional (None when not given)."""
    common.add_docker_host_flag(parser)
    parser.add_argument(
        "--listen",
        metavar="ADDR[:PORT]",
        help="local UDP address of the tunnel (default 0.0.0.0:3333; without a port, 3333 or a free one if taken)",
    )
    parser.add_argument(
        "--endpoint", metavar="HOST[:PORT]", help="address the VM dials to reach this host (default: try candidates)"
    )
    common.add_setup_image_flag(parser)
    common.add_config_flag(parser)
    common.add_control_socket_flag(parser, "status socket for `dmnc status`")
    parser.add_argument(
        "--keep-vm-config",
        action="store_true",
        default=None,
        help="leave the VM side configured when dmnc stops (faster restart)",
    )
    parser.add_argument(
        "-v",
        "--log-level",
        metavar="LEVEL",
        nargs="?",
        const=LogLevel.DEBUG.value,
        help=f"one of {', '.join(LogLevel)} (default info); -v alone means debug",
    )
    parser.add_argument(
        "--vm-stale-after",
        metavar="SECONDS",
        help="set the VM side up again after this long without a packet from it (default 40, 1-3600)",
    )
    parser.add_argument(
        "--force-routes",
        action="store_true",
        default=None,
        help="deprecated: route over every overlapping (VPN, LAN) route; use --route-over CIDR",
    )
    parser.add_argument(
        "--route-include",
        metavar="PATTERN",
        action="append",
        help="only route these networks: a subnet (10.0.0.0/8) or network name glob (proj_*); repeatable",
    )
    parser.add_argument(
        "--route-exclude", metavar="PATTERN", action="append", help="never route these networks; repeatable"
    )
    parser.add_argument(
        "--route-allow",
        metavar="CIDR",
        action="append",
        help="also route subnets inside CIDR, beyond the private ranges; repeatable",
    )
    parser.add_argument(
        "--route-over",
        metavar="CIDR",
        action="append",
        help="route subnets inside CIDR even over other programs' (VPN, LAN) routes; repeatable",
    )
    parser.add_argument(
        "--dns-domain", metavar="NAME", help="containers are NAME.<domain>: the domain (default dmnc.internal)"
    )
    parser.add_argument(
        "--no-dns", action="store_true", default=None, help="no DNS server: containers are reached by IP only"
    )
    parser.add_argument(
        "--path",
        choices=("auto", "tunnel", "direct"),
        help="how to reach containers: direct via the VM's address on a link it shares with the host where it"
        " answers, else the tunnel (auto, the default); always the tunnel; or direct, reporting any fallback",
    )
    parser.add_argument(
        "--allow-inbound",
        metavar="PORT[/tcp|/udp]",
        action="append",
        help="let containers open connections to this host port through the tunnel (default: none; most setups"
        " want host.docker.internal instead); repeatable",
    )


def flags_from_args(args: argparse.Namespace) -> ConfigFlags:
    """The parsed command line as ConfigFlags (kept by the service to reload the configuration on SIGHUP)."""
    return ConfigFlags(
        config_file=args.config_file,
        docker_host=args.docker_host,
        listen=args.listen,
        endpoint=args.endpoint,
        setup_image=args.setup_image,
        control_socket=args.control_socket,
        keep_vm_config=args.keep_vm_config,
        log_level=args.log_level,
        vm_stale_after=args.vm_stale_after,
        force_routes=args.force_routes,
        route_include=None if args.route_include is None else tuple(args.route_include),
        route_exclude=None if args.route_exclude is None else tuple(args.route_exclude),
        route_allow=None if args.route_allow is None else tuple(args.route_allow),
        route_over=None if args.route_over is None else tuple(args.route_over),
        dns_domain=args.dns_domain,
        no_dns=args.no_dns,
        allow_inbound=None if args.allow_inbound is None else tuple(args.allow_inbound),
        path=args.path,
    )


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print(NOT_ROOT_MESSAGE, file=sys.stderr)
        return common.EXIT_FAILURE
    # First of all: the host key is generated and the config file read after this.
    try:
        forbid_core_dumps()
    except HardeningError as error:
        print(f"dmnc: {error}", file=sys.stderr)
        return common.EXIT_FAILURE
    config = common.load_config_or_report("dmnc", flags_from_args(args))
    if config is None:
        return common.EXIT_BAD_CONFIG
    setup_logging(config.log_level)
    # Imported here: the service pulls in trio, httpx and the platform backends, which `dmnc status` never needs.
    from dmnc.supervisor import supervisor  # noqa: PLC0415

    return supervisor.run(config, flags_from_args(args))
