"""IPv6-only networks are routed like any other (issue 12): read from the engine API, through the Docker models and
the route policy, to a route decision.

Docker 28 (API 1.48) creates them with `docker network create --ipv4=false --ipv6 ...`; engine 20.10 in the lab
cannot, so a scripted daemon lists one as Docker 28 describes it (Engine API 1.48, NetworkInspect: `EnableIPv4`
false, only IPv6 pools). Podman 4.3 makes one when a network is created with only an IPv6 subnet and without
`EnableIPv6` (with `EnableIPv6` it adds an IPv4 pool of its own, 10.89.0.0/24).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator

import pytest

from dmnc.docker.client import DockerClient
from dmnc.routes.policy import NetworkInfo, PolicyConfig, evaluate
from tests.fakes.docker_daemon import fake_daemon, json_response, reply
from tests.integration.docker.conftest import start_engine
from tests.lab.dockerd import EngineProcess

SUBNET6 = ipaddress.ip_network("fd5e:7a3b:1c2d::/64")
# `GET /version` of Docker Engine 28.0 (API 1.48, the first with IPv6-only networks).
VERSION_28 = {"Version": "28.0.0", "ApiVersion": "1.48", "MinAPIVersion": "1.24", "Os": "linux"}
# `GET /networks` of Docker 28 after `docker network create --ipv4=false --ipv6 --subnet fd5e:7a3b:1c2d::/64 v6only`.
IPV6_ONLY_NETWORK = {
    "Name": "v6only",
    "Id": "6e5f" * 16,
    "Created": "2025-02-20T10:00:00.000000000Z",
    "Scope": "local",
    "Driver": "bridge",
    "EnableIPv4": False,
    "EnableIPv6": True,
    "IPAM": {
        "Driver": "default",
        "Options": None,
        "Config": [{"Subnet": str(SUBNET6), "Gateway": "fd5e:7a3b:1c2d::1"}],
    },
    "Internal": False,
    "Attachable": False,
    "Ingress": False,
    "ConfigFrom": {"Network": ""},
    "ConfigOnly": False,
    "Containers": {},
    "Options": {},
    "Labels": {},
}


async def test_an_ipv6_only_network_of_docker_28_is_routed_like_any_other() -> None:
    routes = {
        "/version": reply(json_response(200, VERSION_28)),
        "/networks": reply(json_response(200, [IPV6_ONLY_NETWORK])),
    }
    async with fake_daemon(routes) as url, DockerClient.connect(url) as docker:
        assert docker.api_version == "1.48"
        (network,) = await docker.list_networks()
    assert (network.enable_ipv4, network.enable_ipv6) == (False, True)
    assert network.subnets == (SUBNET6,)

    result = evaluate([NetworkInfo.of(network)], PolicyConfig())

    assert result.desired == {SUBNET6}
    assert result.skipped == ()


@pytest.fixture
def podman_engine() -> Iterator[EngineProcess]:
    yield from start_engine("podman")


@pytest.mark.lab
async def test_an_ipv6_only_podman_network_is_routed_like_any_other(podman_engine: EngineProcess) -> None:
    async with DockerClient.connect(f"unix://{podman_engine.socket_path}") as docker:
        name = f"dmnc-v6only-{secrets.token_hex(3)}"
        network_id = await docker.create_network(name, subnets=[str(SUBNET6)])
        try:
            network = await docker.inspect_network(network_id)
        finally:
            await docker.remove_network(network_id)
    assert network.enable_ipv6 is True
    assert network.subnets == (SUBNET6,), network

    assert evaluate([NetworkInfo.of(network)], PolicyConfig()).desired == {SUBNET6}
