"""Benchmark: installing 200 routes through rtnetlink vs one `ip route` process per route (the original tool's
method, which runs `route`/`ip` per subnet), in the same run, inside a throwaway network namespace.

Run as root: .venv/bin/python tests/bench/bench_routes.py   (not collected by pytest)

Also measures the reconciler's latency from a network event to its route being in the kernel, and, with a private
dockerd (tests/lab/dockerd.py), the time from `POST /networks/create` returning to the route being installed,
through the Docker event stream as the supervisor wires it.
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio

from dmnc.routes import Destination, add_route
from dmnc.routes.linux import LinuxRouteManager
from dmnc.routes.policy import NetworkInfo, PolicyConfig
from dmnc.routes.reconcile import RouteReconciler

ROUTES = 200
ROUNDS = 3
EVENT_SAMPLES = 50
DOCKER_SAMPLES = 20


def subnets() -> list[Destination]:
    return [ipaddress.ip_network(f"10.{64 + index // 256}.{index % 256}.0/24") for index in range(ROUTES)]


def flush(interface: str) -> None:
    subprocess.run(["ip", "route", "flush", "dev", interface], check=True)


async def netlink_one_by_one(manager: LinuxRouteManager, destinations: list[Destination]) -> float:
    started = time.perf_counter()
    for destination in destinations:
        await add_route(manager, destination)
    return time.perf_counter() - started


async def netlink_batched(manager: LinuxRouteManager, destinations: list[Destination]) -> float:
    started = time.perf_counter()
    results = await manager.add_many(destinations)
    elapsed = time.perf_counter() - started
    for result in results:
        result.raise_error()
    return elapsed


def ip_process_per_route(interface: str, destinations: list[Destination]) -> float:
    started = time.perf_counter()
    for destination in destinations:
        subprocess.run(["ip", "route", "add", str(destination), "dev", interface], check=True)
    return time.perf_counter() - started


async def event_to_route_latencies(manager: LinuxRouteManager) -> list[float]:
    reconciler = RouteReconciler(manager, PolicyConfig())
    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(reconciler.run)
        reconciler.set_networks([])
        await reconciler.settled()
        for index in range(EVENT_SAMPLES):
            subnet = ipaddress.ip_network(f"10.99.{index}.0/24")
            started = time.perf_counter()
            reconciler.update_network(NetworkInfo(f"n{index}", f"id{index}", "bridge", "local", False, {}, (subnet,)))
            await reconciler.settled()
            latencies.append(time.perf_counter() - started)
        nursery.cancel_scope.cancel()
    return latencies


async def inside(interface: str) -> dict[str, float]:
    manager = LinuxRouteManager(interface)
    destinations = subnets()
    results: dict[str, list[float]] = {"netlink_sequential": [], "netlink_batched": [], "ip_process": []}
    for _ in range(ROUNDS):
        results["netlink_sequential"].append(await netlink_one_by_one(manager, destinations))
        flush(interface)
        results["netlink_batched"].append(await netlink_batched(manager, destinations))
        flush(interface)
        results["ip_process"].append(ip_process_per_route(interface, destinations))
        flush(interface)
    latencies = await event_to_route_latencies(manager)
    flush(interface)
    await manager.aclose()
    best = {name: min(times) for name, times in results.items()}
    return {**best, "event_latency_median": statistics.median(latencies), "event_latency_max": max(latencies)}


def outside() -> None:
    from tests.lab.netns import netns, unique_suffix  # noqa: PLC0415 (lab helpers only for the outer process)

    with netns("dmncrb") as namespace:
        interface, peer = f"rb{unique_suffix()}", f"rp{unique_suffix()}"
        namespace.run(["ip", "link", "add", interface, "type", "veth", "peer", "name", peer])
        namespace.run(["ip", "link", "set", interface, "up"])
        namespace.run(["ip", "link", "set", peer, "up"])
        output = namespace.run([sys.executable, __file__, "--inside", interface], timeout=600).stdout
    result = json.loads(output)
    print(f"{ROUTES} routes, best of {ROUNDS} rounds:")
    for name in ("netlink_batched", "netlink_sequential", "ip_process"):
        seconds = result[name]
        print(f"  {name:20s} {seconds * 1000:8.1f} ms  ({seconds / ROUTES * 1e6:7.1f} us/route)")
    print(f"  ip process per route / netlink sequential: {result['ip_process'] / result['netlink_sequential']:.0f}x")
    print(f"  ip process per route / netlink batched:    {result['ip_process'] / result['netlink_batched']:.0f}x")
    print(
        f"network event -> route in kernel (reconciler, {EVENT_SAMPLES} samples): "
        f"median {result['event_latency_median'] * 1000:.2f} ms, max {result['event_latency_max'] * 1000:.2f} ms"
    )


async def docker_inside(interface: str, socket_path: str) -> dict[str, float]:
    from dmnc.docker.client import DockerClient  # noqa: PLC0415 (only this part needs the Docker client)
    from tests.integration.routes.docker_scenario import watch_docker  # noqa: PLC0415

    manager = LinuxRouteManager(interface)
    reconciler = RouteReconciler(manager, PolicyConfig())
    latencies: list[float] = []
    async with DockerClient.connect(socket_path) as client, trio.open_nursery() as nursery:
        await nursery.start(reconciler.run)
        await nursery.start(watch_docker, client, reconciler)
        for index in range(DOCKER_SAMPLES):
            subnet = ipaddress.ip_network(f"10.98.{index}.0/24")
            await client.create_network(f"dmncbench{index}", subnets=[str(subnet)])
            started = time.perf_counter()
            while subnet not in {route.destination for route in await manager.list_ours()}:
                await trio.sleep(0.0005)
            latencies.append(time.perf_counter() - started)
        for index in range(DOCKER_SAMPLES):
            await client.remove_network(f"dmncbench{index}")
        nursery.cancel_scope.cancel()
    await manager.aclose()
    return {"median": statistics.median(latencies), "max": max(latencies)}


def docker_outside() -> None:
    import shutil  # noqa: PLC0415

    from tests.lab.dockerd import running_dockerd  # noqa: PLC0415
    from tests.lab.netns import Netns, add_veth, netns  # noqa: PLC0415

    if shutil.which("dockerd") is None:
        print("dockerd not installed: skipping the network-create-to-route measurement")
        return
    with running_dockerd() as engine, netns("dmncrbh") as host:
        link = add_veth(host, Netns(engine.netns), "10.204.0.1/24", "10.204.0.2/24")
        output = host.run(
            [sys.executable, __file__, "--docker-inside", link.left_interface, str(engine.socket_path)], timeout=600
        ).stdout
    result = json.loads(output)
    print(
        f"docker network create returned -> route in kernel ({DOCKER_SAMPLES} samples, via /events): "
        f"median {result['median'] * 1000:.2f} ms, max {result['max'] * 1000:.2f} ms"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--inside":
        print(json.dumps(trio.run(inside, sys.argv[2])))
    elif len(sys.argv) == 4 and sys.argv[1] == "--docker-inside":
        print(json.dumps(trio.run(docker_inside, sys.argv[2], sys.argv[3])))
    else:
        outside()
        docker_outside()
