"""`dmnc docker`: which Docker daemon dmnc would use, and why, and what it sees there.

Prints every discovery step with its outcome (see `dmnc.docker.discovery`), then the chosen daemon: product, engine
version, negotiated API version, the VM's name and OS, and each network with its driver, flags and subnets. Reads
`--docker-host` like `dmnc run` (flag > DMNC_DOCKER_HOST > config file) and discovers the daemon otherwise. Needs
only access to the Docker socket. Exit codes: 0 a daemon answered, 1 none did (every place tried is listed),
2 bad configuration.
"""

from __future__ import annotations

import argparse
import sys

import trio

from dmnc.commands import _common as common
from dmnc.config import ConfigFlags
from dmnc.docker.client import DockerClient
from dmnc.docker.discovery import detect_runtime, discover_endpoint
from dmnc.docker.errors import DiscoveryError, DockerError


def register(commands: common.Subcommands) -> None:
    parser = commands.add_parser("docker", help="show which Docker daemon dmnc finds, how, and its networks")
    common.add_docker_host_flag(parser)
    common.add_config_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = common.load_config_or_report(
        "dmnc", ConfigFlags(config_file=args.config_file, docker_host=args.docker_host)
    )
    if config is None:
        return common.EXIT_BAD_CONFIG
    docker_host = config.docker_host.url if config.docker_host is not None else None
    try:
        report = trio.run(describe_daemon, docker_host)
    except DiscoveryError as error:
        print("docker discovery:", file=sys.stderr)
        for attempt in error.attempts:
            print(f"  {attempt.describe()}", file=sys.stderr)
        print("dmnc: no Docker daemon found", file=sys.stderr)
        return common.EXIT_FAILURE
    except DockerError as error:
        print(f"dmnc: {error}", file=sys.stderr)
        return common.EXIT_FAILURE
    print(report)
    return common.EXIT_OK


async def describe_daemon(docker_host: str | None) -> str:
    """The report `dmnc docker` prints (DockerError if discovery or the daemon fails)."""
    endpoint = await discover_endpoint(docker_host)
    lines = ["docker discovery:", *(f"  {attempt.describe()}" for attempt in endpoint.attempts)]
    async with DockerClient.connect(endpoint.address) as docker:
        info = await docker.info()
        version = docker.server_version
        runtime = detect_runtime(version, info, docker.address)
        networks = await docker.list_networks()
    lines += [
        f"daemon: {endpoint.address.url} ({endpoint.source})",
        f"  product: {runtime.value}, engine {version.version}, API {docker.api_version} "
        f"(daemon up to {version.api_version})",
        f"  VM: {info.name or '?'} running {info.operating_system or '?'}, kernel {info.kernel_version or '?'}",
        "networks:",
    ]
    for network in sorted(networks, key=lambda item: item.name):
        flags = [network.driver or "?", network.scope]
        if network.internal:
            flags.append("internal")
        subnets = ", ".join(str(subnet) for subnet in network.subnets) or "no subnet"
        lines.append(f"  {network.name} ({', '.join(flags)}): {subnets}")
    return "\n".join(lines)
