"""Route scenarios that run INSIDE a test's network namespace, one per process.

    ip netns exec NS python -m tests.integration.routes.scenarios SCENARIO INTERFACE OTHER_INTERFACE

The pytest process never enters a namespace itself; it starts this module there and asserts on the one JSON object
this prints on stdout (facts observed, log lines, timings). Every scenario has a hard deadline so a bug ends as a
failed test, not a hung suite.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import logging
import os
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from dmnc.routes import Destination, InterfaceNotFoundError, RouteExistsError, add_route, delete_route
from dmnc.routes.linux import LinuxRouteManager
from dmnc.routes.manager import NextHop
from dmnc.routes.policy import NetworkInfo, PolicyConfig
from dmnc.routes.reconcile import RouteReconciler

# linux/if_tun.h
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SCENARIO_DEADLINE_SECONDS = 10.0
RESTORE_DEADLINE_SECONDS = 1.0  # issue 6: "a route deleted with `ip route del` -> restored within a second"

Facts = dict[str, Any]
net = ipaddress.ip_network


class LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def open_tun(name: str) -> int:
    """A TUN interface named `name`, up; it lives as long as the returned descriptor."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    return fd


def kernel_routes(*selector: str, families: tuple[str, ...] = ("-4", "-6")) -> list[str]:
    """`ip route show` lines, as another program sees the table."""
    lines: list[str] = []
    for family in families:
        output = subprocess.run(["ip", family, "route", "show", *selector], capture_output=True, text=True, check=True)
        lines += [" ".join(line.split()) for line in output.stdout.splitlines()]
    return lines


def bridge_network(index: int, *subnets: str) -> NetworkInfo:
    return NetworkInfo(f"net{index}", f"id{index}", "bridge", "local", False, {}, tuple(net(s) for s in subnets))


async def crud(interface: str, other_interface: str) -> Facts:
    tun = f"{interface[:11]}tun"
    fd = open_tun(tun)
    facts: Facts = {}
    try:
        manager = LinuxRouteManager(tun)
        subnets = [net("172.30.1.0/24"), net("172.30.2.0/24"), net("fd00:30:1::/64"), net("fd00:30:2::/64")]
        for subnet in subnets:
            await add_route(manager, subnet)
        facts["after_add"] = kernel_routes("proto", "220")
        facts["listed_ours"] = sorted(str(route.destination) for route in await manager.list_ours())
        try:
            await add_route(manager, subnets[0])
            facts["duplicate_add"] = "accepted"
        except RouteExistsError as error:
            facts["duplicate_add"] = str(error)
        # Another program's route to the same destination through another interface is never ours to delete.
        subprocess.run(["ip", "route", "add", "172.30.9.0/24", "dev", other_interface], check=True)
        facts["delete_foreign"] = await delete_route(manager, net("172.30.9.0/24"))
        facts["foreign_still_there"] = kernel_routes("172.30.9.0/24", families=("-4",))
        facts["deleted"] = [await delete_route(manager, subnet) for subnet in subnets]
        facts["deleted_again"] = await delete_route(manager, subnets[0])
        facts["after_delete"] = kernel_routes("proto", "220")
        # More than one batch of pipelined requests (REQUESTS_PER_BATCH) in each direction.
        many = [net(f"10.{64 + index // 256}.{index % 256}.0/24") for index in range(150)]
        added = await manager.add_many(many)
        facts["many_added"] = (len(await manager.list_ours()), sum(result.error is None for result in added))
        deleted = await manager.delete_many([*many, net("10.99.99.0/24")])
        facts["many_deleted"] = [result.changed for result in deleted].count(True)
        facts["many_results"] = sorted({str(result.error) for result in [*added, *deleted]})
        facts["after_many"] = kernel_routes("proto", "220")
        # One batch in which the kernel refuses one destination (another program's route is there, NLM_F_EXCL):
        # the others still land, and each result says what became of its destination.
        batch = [net("172.30.3.0/24"), net("172.30.9.0/24"), net("fd00:30:3::/64")]
        facts["partial_batch"] = [
            [str(result.destination), result.changed, None if result.error is None else str(result.error)]
            for result in await manager.add_many(batch)
        ]
        facts["after_partial_batch"] = kernel_routes("proto", "220")
        facts["foreign_after_batch"] = kernel_routes("172.30.9.0/24", families=("-4",))
        facts["partial_delete"] = [
            [str(result.destination), result.changed, result.error] for result in await manager.delete_many(batch)
        ]
        # Routes die with the tunnel interface: a crashed dmnc leaves none behind.
        await add_route(manager, subnets[0])
        await add_route(manager, subnets[2])
        await manager.aclose()
    finally:
        os.close(fd)
    facts["after_tun_closed"] = kernel_routes("proto", "220")
    try:
        LinuxRouteManager(tun)
        facts["gone_interface"] = "accepted"
    except InterfaceNotFoundError as error:
        facts["gone_interface"] = str(error)
    return facts


async def run_reconciler(
    interface: str,
    body: Callable[[LinuxRouteManager, RouteReconciler], Awaitable[Facts]],
    policy: PolicyConfig = PolicyConfig(),  # noqa: B008 (frozen)
) -> Facts:
    manager = LinuxRouteManager(interface)
    reconciler = RouteReconciler(manager, policy)
    async with trio.open_nursery() as nursery:
        await nursery.start(reconciler.run)
        facts = await body(manager, reconciler)
        nursery.cancel_scope.cancel()
    await manager.aclose()
    return facts


async def burst(interface: str, other_interface: str) -> Facts:
    async def body(manager: LinuxRouteManager, reconciler: RouteReconciler) -> Facts:
        reconciler.set_networks([])
        await reconciler.settled()
        started = time.perf_counter()
        for index in range(50):
            reconciler.update_network(bridge_network(index, f"172.31.{index}.0/24", f"fd00:31:{index:x}::/64"))
        await reconciler.settled()
        elapsed = time.perf_counter() - started
        routes = kernel_routes("proto", "220")
        for index in range(25):
            reconciler.remove_network(f"id{index}")
        await reconciler.settled()
        after_removal = kernel_routes("proto", "220")
        await reconciler.withdraw()
        reconciler.trigger()
        await reconciler.settled()
        return {
            "seconds": elapsed,
            "routes": routes,
            "after_removal": after_removal,
            "after_withdraw": kernel_routes("proto", "220"),
        }

    return await run_reconciler(interface, body)


async def wait_until_ours(manager: LinuxRouteManager, destination: Destination) -> float:
    started = time.perf_counter()
    with trio.fail_after(RESTORE_DEADLINE_SECONDS):
        while destination not in {route.destination for route in await manager.list_ours()}:
            await trio.sleep(0.005)
    return time.perf_counter() - started


async def restore(interface: str, other_interface: str) -> Facts:
    async def body(manager: LinuxRouteManager, reconciler: RouteReconciler) -> Facts:
        reconciler.set_networks([bridge_network(1, "172.29.1.0/24"), bridge_network(2, "172.29.2.0/24")])
        await reconciler.settled()
        deleter = subprocess.Popen(["ip", "route", "del", "172.29.1.0/24", "dev", interface])
        deleter.wait()
        del_seconds = await wait_until_ours(manager, net("172.29.1.0/24"))
        replacer = subprocess.Popen(["ip", "route", "replace", "172.29.2.0/24", "dev", other_interface])
        replacer.wait()
        replace_seconds = await wait_until_ours(manager, net("172.29.2.0/24"))
        return {
            "deleter_pid": deleter.pid,
            "replacer_pid": replacer.pid,
            "delete_restored_seconds": del_seconds,
            "replace_restored_seconds": replace_seconds,
            "routes": kernel_routes("root", "172.29.0.0/16", families=("-4",)),
        }

    # Only --route-over keeps a route against another program's equal one; without it dmnc yields (`yield_`).
    return await run_reconciler(interface, body, PolicyConfig.from_strings(over=["172.29.2.0/24"]))


async def wait_until_not_ours(manager: LinuxRouteManager, destination: Destination) -> None:
    with trio.fail_after(RESTORE_DEADLINE_SECONDS):
        while destination in {route.destination for route in await manager.list_ours()}:
            await trio.sleep(0.005)


async def yield_(interface: str, other_interface: str) -> Facts:
    async def body(manager: LinuxRouteManager, reconciler: RouteReconciler) -> Facts:
        reconciler.set_networks([bridge_network(1, "172.25.1.0/24"), bridge_network(2, "172.25.2.0/24")])
        await reconciler.settled()
        # A "VPN" replaces one route and adds a more specific one inside the other: dmnc yields both.
        subprocess.run(["ip", "route", "replace", "172.25.1.0/24", "dev", other_interface], check=True)
        subprocess.run(["ip", "route", "add", "172.25.2.128/25", "dev", other_interface], check=True)
        await wait_until_not_ours(manager, net("172.25.2.0/24"))
        reconciler.trigger()
        await reconciler.settled()
        facts: Facts = {
            "while_taken": kernel_routes("root", "172.25.0.0/16", families=("-4",)),
            "reasons": sorted(str(status.reason) for status in reconciler.status().subnets),
        }
        # The VPN goes: both come back.
        subprocess.run(["ip", "route", "del", "172.25.1.0/24", "dev", other_interface], check=True)
        subprocess.run(["ip", "route", "del", "172.25.2.128/25", "dev", other_interface], check=True)
        await wait_until_ours(manager, net("172.25.1.0/24"))
        await wait_until_ours(manager, net("172.25.2.0/24"))
        facts["after_vpn_left"] = kernel_routes("root", "172.25.0.0/16", families=("-4",))
        return facts

    return await run_reconciler(interface, body)


async def overlap(interface: str, other_interface: str) -> Facts:
    subprocess.run(["ip", "route", "add", "172.28.0.0/16", "dev", other_interface], check=True)

    async def body(manager: LinuxRouteManager, reconciler: RouteReconciler) -> Facts:
        before = kernel_routes()
        reconciler.set_networks([bridge_network(1, "172.28.5.0/24"), bridge_network(2, "172.27.0.0/24")])
        await reconciler.settled()
        return {"before": before, "after": kernel_routes(), "findings": len(reconciler.status().overlaps)}

    return await run_reconciler(interface, body)


async def link_flap(interface: str, other_interface: str) -> Facts:
    async def body(manager: LinuxRouteManager, reconciler: RouteReconciler) -> Facts:
        reconciler.set_networks([bridge_network(1, "172.26.1.0/24", "fd00:26:1::/64")])
        await reconciler.settled()
        subprocess.run(["ip", "link", "set", interface, "down"], check=True)
        with trio.fail_after(RESTORE_DEADLINE_SECONDS):
            while await manager.list_ours():
                await trio.sleep(0.005)
        facts: Facts = {"while_down": kernel_routes("proto", "220")}
        subprocess.run(["ip", "link", "set", interface, "up"], check=True)
        started = time.perf_counter()
        with trio.fail_after(RESTORE_DEADLINE_SECONDS):
            while len(await manager.list_ours()) < 2:
                await trio.sleep(0.005)
        facts["restored_seconds"] = time.perf_counter() - started
        facts["after_up"] = kernel_routes("proto", "220")
        return facts

    return await run_reconciler(interface, body)


async def host_addresses(interface: str, other_interface: str) -> Facts:
    tun = f"{interface[:11]}tun"
    fd = open_tun(tun)
    try:
        subprocess.run(["ip", "addr", "add", "10.33.33.1", "peer", "10.33.33.2", "dev", tun], check=True)
        subprocess.run(["ip", "addr", "add", "192.168.77.5/24", "dev", other_interface], check=True)
        manager = LinuxRouteManager(tun)
        try:
            facts: Facts = {"before": sorted(f"{n.interface} {n.network}" for n in await manager.host_networks())}
            async with manager.address_changes() as changes:
                subprocess.run(["ip", "addr", "add", "172.20.10.2/28", "dev", other_interface], check=True)
                started = time.perf_counter()
                with trio.fail_after(RESTORE_DEADLINE_SECONDS):
                    await changes.__anext__()
                facts["noticed_seconds"] = time.perf_counter() - started
            facts["after"] = sorted(f"{n.interface} {n.network}" for n in await manager.host_networks())
        finally:
            await manager.aclose()
    finally:
        os.close(fd)
    return facts


async def shadow(interface: str, other_interface: str) -> Facts:
    async def body(manager: LinuxRouteManager, reconciler: RouteReconciler) -> Facts:
        reconciler.set_networks([bridge_network(1, "172.24.1.0/24")])
        await reconciler.settled()
        facts: Facts = {"before": [(s.decision, s.installed) for s in reconciler.status().subnets]}
        # Tailscale with an exit node: a rule at 5270 looks up table 52, which holds a default route.
        subprocess.run(["ip", "route", "add", "default", "dev", other_interface, "table", "52"], check=True)
        subprocess.run(["ip", "rule", "add", "pref", "5270", "table", "52"], check=True)
        started = time.perf_counter()
        with trio.fail_after(RESTORE_DEADLINE_SECONDS):
            while reconciler.status().subnets[0].decision != "shadowed":
                await trio.sleep(0.005)
        facts["noticed_seconds"] = time.perf_counter() - started
        facts["shadowed"] = [(s.decision, s.installed, s.reason) for s in reconciler.status().subnets]
        subprocess.run(["ip", "rule", "del", "pref", "5270"], check=True)
        with trio.fail_after(RESTORE_DEADLINE_SECONDS):
            while reconciler.status().subnets[0].decision != "routed":
                await trio.sleep(0.005)
        facts["after"] = [(s.decision, s.installed) for s in reconciler.status().subnets]
        return facts

    return await run_reconciler(interface, body)


async def wait_for_routes(selector: tuple[str, ...], expected: list[str]) -> list[str]:
    """Poll the kernel's table until `ip route show SELECTOR` lists `expected` (the scenario's deadline bounds it)."""
    while (found := kernel_routes(*selector)) != expected:
        await trio.sleep(0.005)
    return found


async def gateway(interface: str, other_interface: str) -> Facts:
    """The direct path: IPv4 routes move to a gateway on `other_interface` and back, IPv6 stays on the tunnel, and
    ownership follows dmnc's protocol alone."""
    for address in ("10.77.0.1/24", "fd77::1/64"):
        subprocess.run(["ip", "addr", "add", address, "dev", other_interface, "nodad"], check=True)
    # Another program's gateway route on the same link: never dmnc's, whatever dmnc does with its own.
    subprocess.run(["ip", "route", "add", "172.31.9.0/24", "via", "10.77.0.2"], check=True)

    async def body(manager: LinuxRouteManager, reconciler: RouteReconciler) -> Facts:
        facts: Facts = {}
        reconciler.set_networks([bridge_network(1, "172.31.1.0/24", "fd00:31:1::/64")])
        ours = ("proto", "220")
        facts["tunnel"] = await wait_for_routes(
            ours,
            [f"172.31.1.0/24 dev {interface} scope link", f"fd00:31:1::/64 dev {interface} metric 1024 pref medium"],
        )
        reconciler.set_next_hop(4, NextHop(ipaddress.ip_address("10.77.0.2"), other_interface))
        facts["direct"] = await wait_for_routes(
            ours,
            [
                f"172.31.1.0/24 via 10.77.0.2 dev {other_interface}",
                f"fd00:31:1::/64 dev {interface} metric 1024 pref medium",
            ],
        )
        facts["listed_ours"] = sorted(route.describe() for route in await manager.list_ours())
        facts["delete_foreign"] = await delete_route(manager, net("172.31.9.0/24"))
        facts["foreign"] = kernel_routes("172.31.9.0/24", families=("-4",))
        reconciler.set_next_hop(6, NextHop(ipaddress.ip_address("fd77::2"), other_interface))
        facts["direct6"] = await wait_for_routes(
            ours,
            [
                f"172.31.1.0/24 via 10.77.0.2 dev {other_interface}",
                f"fd00:31:1::/64 via fd77::2 dev {other_interface} metric 1024 pref medium",
            ],
        )
        reconciler.set_next_hop(4, None)
        reconciler.set_next_hop(6, None)
        facts["back"] = await wait_for_routes(
            ours,
            [f"172.31.1.0/24 dev {interface} scope link", f"fd00:31:1::/64 dev {interface} metric 1024 pref medium"],
        )
        reconciler.set_next_hop(4, NextHop(ipaddress.ip_address("10.77.0.2"), other_interface))
        await wait_for_routes(ours, [f"172.31.1.0/24 via 10.77.0.2 dev {other_interface}", facts["back"][1]])
        await reconciler.withdraw()
        facts["after_withdraw"] = kernel_routes(*ours)
        facts["foreign_after_withdraw"] = kernel_routes("172.31.9.0/24", families=("-4",))
        return facts

    return await run_reconciler(interface, body)


SCENARIOS = {
    "gateway": gateway,
    "shadow": shadow,
    "host_addresses": host_addresses,
    "crud": crud,
    "burst": burst,
    "restore": restore,
    "yield": yield_,
    "overlap": overlap,
    "link_flap": link_flap,
}


async def main(arguments: list[str]) -> Facts:
    scenario, interface, other_interface = arguments
    with trio.fail_after(SCENARIO_DEADLINE_SECONDS):
        return await SCENARIOS[scenario](interface, other_interface)


if __name__ == "__main__":
    collector = LogCollector()
    logging.getLogger("dmnc").addHandler(collector)
    logging.getLogger("dmnc").setLevel(logging.INFO)
    result = trio.run(main, sys.argv[1:])
    result["log"] = collector.lines
    print(json.dumps(result))
