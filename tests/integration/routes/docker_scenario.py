"""End-to-end route scenario with a real dockerd, run INSIDE the "host" namespace of the test:

    ip netns exec HOST python -m tests.integration.routes.docker_scenario TUNNEL DOCKER_SOCKET IMAGE

dockerd runs in its own namespace (the "VM"), joined to the host namespace by a veth pair that stands in for the
WireGuard tunnel (the VM end answers ARP for its containers with proxy_arp, as a point-to-point tunnel would not
need). The watcher below is what the supervisor does: subscribe to network events first, then list (full resync),
then apply each event; cancelling it is "Docker went away". Prints one JSON object of facts.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from typing import Any

import trio

from dmnc.docker.client import ContainerSpec, DockerClient
from dmnc.routes.linux import LinuxRouteManager
from dmnc.routes.policy import NetworkInfo, PolicyConfig
from dmnc.routes.reconcile import RouteReconciler

NETWORKS = 50
PREFIX = "dmncb"
CONCURRENCY = 10
SCENARIO_DEADLINE_SECONDS = 240.0
ROUTES_DEADLINE_SECONDS = 60.0


async def watch_docker(
    client: DockerClient, reconciler: RouteReconciler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with client.events({"type": ["network"]}) as events:
        reconciler.set_networks([NetworkInfo.of(network) for network in await client.list_networks()])
        task_status.started()
        async for event in events:
            if event.action == "create":
                reconciler.update_network(NetworkInfo.of(await client.inspect_network(event.actor_id)))
            elif event.action == "destroy":
                reconciler.remove_network(event.actor_id)


def subnets_of(index: int) -> list[str]:
    return [f"10.150.{index}.0/24", f"fd00:150:{index:x}::/64"]


async def ours(manager: LinuxRouteManager) -> set[str]:
    return {str(route.destination) for route in await manager.list_ours()}


async def wait_for_routes(manager: LinuxRouteManager, expected: set[str]) -> float:
    started = time.perf_counter()
    with trio.fail_after(ROUTES_DEADLINE_SECONDS):
        while await ours(manager) != expected:
            await trio.sleep(0.01)
    return time.perf_counter() - started


def ping(address: str) -> bool:
    return (
        subprocess.run(["ping", "-n", "-q", "-c", "1", "-W", "2", address], capture_output=True, check=False).returncode
        == 0
    )


async def create_networks(client: DockerClient, indexes: range) -> None:
    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def create(index: int) -> None:
        async with limiter:
            await client.create_network(f"{PREFIX}{index}", enable_ipv6=True, subnets=subnets_of(index))

    async with trio.open_nursery() as nursery:
        for index in indexes:
            nursery.start_soon(create, index)


async def remove_networks(client: DockerClient, names: list[str]) -> None:
    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def remove(name: str) -> None:
        async with limiter:
            await client.remove_network(name)

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(remove, name)


def expected_routes(indexes: range | list[int]) -> set[str]:
    return {str(ipaddress.ip_network(subnet)) for index in indexes for subnet in subnets_of(index)}


async def scenario(tunnel: str, socket_path: str, image: str) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    manager = LinuxRouteManager(tunnel)
    reconciler = RouteReconciler(manager, PolicyConfig())
    async with DockerClient.connect(socket_path) as client, trio.open_nursery() as nursery:
        await nursery.start(reconciler.run)
        watcher = trio.CancelScope()

        async def watched(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with watcher:
                await watch_docker(client, reconciler, task_status=task_status)

        await nursery.start(watched)
        await reconciler.settled()
        facts["before"] = sorted(await ours(manager))  # the default bridge network of this dockerd

        started = time.perf_counter()
        await create_networks(client, range(NETWORKS))
        facts["created_seconds"] = time.perf_counter() - started
        default_bridge = set(facts["before"])
        await wait_for_routes(manager, default_bridge | expected_routes(range(NETWORKS)))
        facts["burst_routed_seconds"] = time.perf_counter() - started

        containers = []
        for index in (0, NETWORKS - 1):
            created = await client.create_container(
                ContainerSpec(image=image, command=["sleep", "300"], network_mode=f"{PREFIX}{index}")
            )
            await client.start_container(created.id)
            containers.append(created.id)
        # The first container on a network with an explicit subnet gets .2 (.1 is the bridge).
        facts["reachable"] = [ping(f"10.150.{index}.2") for index in (0, NETWORKS - 1)]
        for container in containers:
            await client.remove_container(container, force=True)

        # Docker goes away; meanwhile networks are removed and created. Routes stay as they were.
        watcher.cancel()
        await remove_networks(client, [f"{PREFIX}{index}" for index in range(10)])
        await client.create_network(f"{PREFIX}late", subnets=["10.151.0.0/24"])
        reconciler.trigger()
        await reconciler.settled()
        facts["kept_while_away"] = "10.150.0.0/24" in await ours(manager)
        # Docker is back: subscribe and resync.
        watcher = trio.CancelScope()
        await nursery.start(watched)
        resynced: set[str] = default_bridge | expected_routes(range(10, NETWORKS)) | {"10.151.0.0/24"}
        facts["resync_seconds"] = await wait_for_routes(manager, resynced)

        started = time.perf_counter()
        await remove_networks(client, [f"{PREFIX}{index}" for index in range(10, NETWORKS)] + [f"{PREFIX}late"])
        await wait_for_routes(manager, default_bridge)
        facts["removal_seconds"] = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    await manager.aclose()
    return facts


async def main(arguments: list[str]) -> dict[str, Any]:
    tunnel, socket_path, image = arguments
    with trio.fail_after(SCENARIO_DEADLINE_SECONDS):
        return await scenario(tunnel, socket_path, image)


if __name__ == "__main__":
    print(json.dumps(trio.run(main, sys.argv[1:])))
