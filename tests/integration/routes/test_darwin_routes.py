"""The macOS route manager against the real routing socket and a real utun (macOS CI runners, as root).

On Linux these tests are not collected as runnable (skipif on the platform): there is no macOS kernel here.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator

import pytest
import trio

from dmnc.routes import add_route, delete_route, open_route_manager
from dmnc.routes.darwin import DarwinRouteManager
from dmnc.routes.policy import NetworkInfo, PolicyConfig
from dmnc.routes.reconcile import RouteReconciler
from tests.conftest import require_root

pytestmark = [pytest.mark.lab, pytest.mark.skipif(sys.platform != "darwin", reason="macOS routing socket")]

net = ipaddress.ip_network


@pytest.fixture
def utun() -> Iterator[str]:
    require_root()
    from dmnc.tun import TunAddress, open_tun  # noqa: PLC0415 (opens a utun only on macOS)

    device = open_tun(addresses=[TunAddress(ipaddress.ip_interface("10.77.0.1/32"), ipaddress.ip_address("10.77.0.2"))])
    try:
        yield device.name
    finally:
        device.close()


def route_get(destination: str) -> str:
    return subprocess.run(["route", "-n", "get", destination], capture_output=True, text=True, check=False).stdout


async def test_add_list_delete_ipv4_and_ipv6_routes_through_a_utun(utun: str) -> None:
    subnets = [net("172.31.250.0/24"), net("fd00:77::/64")]
    async with open_route_manager(utun) as manager:
        added = await manager.add_many(subnets)
        try:
            assert [(result.error, result.changed) for result in added] == [(None, True), (None, True)]
            assert f"interface: {utun}" in route_get("172.31.250.9")
            assert {route.destination for route in await manager.list_ours()} == set(subnets)
        finally:
            deleted = await manager.delete_many(subnets)
        assert [(result.error, result.changed) for result in deleted] == [(None, True), (None, True)]
        assert await manager.list_ours() == []


async def test_route_deleted_with_route_delete_is_restored_within_a_second(utun: str) -> None:
    async with open_route_manager(utun) as manager, trio.open_nursery() as nursery:
        reconciler = RouteReconciler(manager, PolicyConfig())
        await nursery.start(reconciler.run)
        reconciler.set_networks([NetworkInfo("app", "id", "bridge", "local", False, {}, (net("172.31.251.0/24"),))])
        await reconciler.settled()
        subprocess.run(["route", "-q", "-n", "delete", "-net", "172.31.251.0/24"], check=True)
        with trio.fail_after(1.0):
            while net("172.31.251.0/24") not in {route.destination for route in await manager.list_ours()}:
                await trio.sleep(0.01)
        await reconciler.withdraw()
        nursery.cancel_scope.cancel()


async def test_the_kernel_lookup_names_the_utun_of_a_routed_subnet_and_nothing_shadows_it(utun: str) -> None:
    subnet = net("172.31.252.0/24")
    async with open_route_manager(utun) as manager:
        assert isinstance(manager, DarwinRouteManager)
        await add_route(manager, subnet)
        try:
            answer = await manager.lookup(ipaddress.ip_address("172.31.252.1"))
            assert answer is not None
            assert (answer.route.destination, answer.interface_name) == (subnet, utun), route_get("172.31.252.1")
            assert await manager.shadow_of(subnet) is None
            # Outside it the runner's default route answers, through another interface: that is what a shadow is.
            shadow = await manager.shadow_of(net("172.31.253.0/24"))
            assert shadow is not None, route_get("172.31.253.1")
            assert shadow.describe().startswith("shadowed by 0.0.0.0/"), shadow  # the default route
            assert f"via {utun}" not in shadow.describe()
        finally:
            await delete_route(manager, subnet)
