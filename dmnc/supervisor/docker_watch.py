"""Docker watching: find the daemon, connect, follow its network events (or poll, for Podman) into the route
reconciler, and keep the VM side while connected. Losing Docker cancels only this subtree: the tunnel and the
installed routes keep working while the daemon restarts, and the watcher reconnects with backoff and resyncs."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable

import trio

from dmnc.config import Config
from dmnc.control import EventBroadcaster
from dmnc.dns.service import DnsService
from dmnc.docker.client import DockerClient
from dmnc.docker.discovery import Runtime, detect_runtime, discover_endpoint
from dmnc.docker.errors import BadResponse, DiscoveryError, DockerError
from dmnc.docker.models import Event, Network
from dmnc.errors import first_of
from dmnc.logsetup import printable
from dmnc.routes.policy import NetworkInfo
from dmnc.routes.reconcile import RouteReconciler
from dmnc.supervisor.backoff import Backoff
from dmnc.supervisor.log import announce, logger
from dmnc.supervisor.parts import SHUTDOWN_BUDGET_S
from dmnc.supervisor.vm_keeper import VmKeeper
from dmnc.vm.errors import VmSetupError
from dmnc.vm.shims import plan_shims, route_info

# Reconnecting to Docker: fast at first (a daemon restart takes ~1 s), capped so a stopped Docker Desktop costs
# almost nothing, jittered so several clients do not hammer a starting daemon in step.
RECONNECT_INITIAL_S = 0.25
RECONNECT_MAX_S = 5.0
# Podman's event stream has no network events: its networks are listed this often instead. Only for Podman, whose
# machine VM does not sleep the way Docker Desktop's Resource Saver does.
NETWORK_POLL_INTERVAL_S = 5.0
# Events after which container names are listed again (Docker's events reference: container start/die/rename/destroy,
# network connect/disconnect; https://docs.docker.com/reference/cli/docker/system/events/).
NAME_EVENTS = frozenset(
    {
        ("container", "start"),
        ("container", "die"),
        ("container", "rename"),
        ("container", "destroy"),
        ("network", "connect"),
        ("network", "disconnect"),
    }
)


@dataclasses.dataclass(frozen=True)
class DockerState:
    """The daemon as last seen, for `dmnc status`."""

    host: str | None = None
    runtime: str | None = None
    api_version: str | None = None
    connected: bool = False


class DockerWatch:
    """Keeps a connection to the Docker daemon and feeds its networks to the route reconciler."""

    def __init__(
        self,
        routes: RouteReconciler,
        vm: VmKeeper,
        config: Callable[[], Config],
        events: EventBroadcaster,
        stopping: Callable[[], bool],
        *,
        names: DnsService | None = None,
    ) -> None:
        self._routes = routes
        self._vm = vm
        self._config = config  # the current configuration: SIGHUP may replace it
        self._events = events
        self._stopping = stopping
        self._names = names  # container names over DNS; None with --no-dns
        self.state = DockerState()
        self._networks: dict[str, Network] = {}  # by ID: the VM's macvlan shims follow them

    async def run(self) -> None:
        backoff = Backoff(RECONNECT_INITIAL_S, RECONNECT_MAX_S)
        last_problem: str | None = None
        while True:
            try:
                docker_host = self._config().docker_host
                endpoint = await discover_endpoint(None if docker_host is None else docker_host.url)
                async with DockerClient.connect(endpoint.address) as docker:
                    await self._watch(docker, backoff)
                problem = "the Docker event stream ended"
            except Exception as error:  # a nursery below may wrap the Docker error in an exception group
                found = docker_problem(error)
                if found is None:
                    raise
                problem = found
            if self.state.connected:
                self.state = dataclasses.replace(self.state, connected=False)
                announce(self._events, "docker.disconnected", f"{problem}; reconnecting (routes stay)", logging.WARNING)
            elif problem != last_problem:
                logger.warning("%s; retrying", problem)
            last_problem = problem
            await trio.sleep(backoff.next_delay())

    async def _watch(self, docker: DockerClient, backoff: Backoff) -> None:
        version, info = await docker.version(), await docker.info()
        runtime = detect_runtime(version, info, docker.address)
        self.state = DockerState(
            host=docker.address.url, runtime=runtime.value, api_version=docker.api_version, connected=True
        )
        async with docker.events({"type": ["network", "container"]}) as events:
            # The stream is open before the list is read, so nothing created in between is missed.
            listed = await docker.list_networks()
            self._routes.set_networks(route_info(network) for network in listed)
            self._set_networks(listed)
            announce(
                self._events,
                "docker.connected",
                f"connected to {runtime.value} at {printable(docker.address.url)} (API {docker.api_version})",
            )
            backoff.reset()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._vm.keep, docker)
                    if self._names is not None:
                        nursery.start_soon(self._names.follow, docker)
                    if runtime is Runtime.PODMAN:
                        nursery.start_soon(self._poll_networks, docker)
                    async for event in events:
                        await self._on_event(docker, event)
                    nursery.cancel_scope.cancel()
            finally:
                if self._stopping():
                    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_BUDGET_S) as budget:
                        await self._vm.tear_down(docker)
                    if budget.cancelled_caught:
                        logger.warning("VM side not removed in time; the next dmnc start replaces it")

    async def _poll_networks(self, docker: DockerClient) -> None:
        """For engines whose event stream carries no network events (Podman 4 sends none): list them instead."""
        known: list[NetworkInfo] | None = None
        while True:
            await trio.sleep(NETWORK_POLL_INTERVAL_S)
            listed = await docker.list_networks()
            networks = sorted((route_info(network) for network in listed), key=lambda info: info.id)
            if known is not None and networks != known:
                self._routes.set_networks(networks)
                self._set_networks(listed)
            known = networks
            if self._names is not None:
                self._names.containers_changed()

    async def _on_event(self, docker: DockerClient, event: Event) -> None:
        if self._names is not None and (event.type, event.action) in NAME_EVENTS:
            self._names.containers_changed()
        if event.type == "container":
            if event.action == "start":
                self._vm.container_started()
            return
        if event.action == "create":
            try:
                network = await docker.inspect_network(event.actor_id)
            except DockerError as error:
                logger.warning(
                    "network %s created but not readable: %s", printable(event.actor_id[:12]), printable(str(error))
                )
                return
            self._routes.update_network(route_info(network))
            self._set_networks([*self._networks.values(), network])
            announce(self._events, "network.created", f"network {printable(network.name)} created: {_subnets(network)}")
        elif event.action == "destroy":
            self._routes.remove_network(event.actor_id)
            self._set_networks(network for network in self._networks.values() if network.id != event.actor_id)
            name = event.actor_attributes.get("name", event.actor_id[:12])
            announce(self._events, "network.removed", f"network {printable(name)} removed")

    def _set_networks(self, networks: Iterable[Network]) -> None:
        """The daemon's networks changed: the VM side's shims follow (a new setup run when their set changes)."""
        self._networks = {network.id: network for network in networks}
        self._vm.set_shims(plan_shims(self._networks.values()).shims)


def docker_problem(error: BaseException) -> str | None:
    """A readable line for a lost or unreachable Docker inside `error` (possibly an exception group); None if
    `error` is not about Docker (a bug, which must not be retried away). The daemon's text in it is escaped."""
    found = first_of(error, (DockerError, VmSetupError))
    if found is None:
        return None
    reason = printable(str(found))
    if isinstance(found, DiscoveryError):
        return f"Docker is not reachable: {reason}"
    if isinstance(found, BadResponse):
        # It answers, but not as the Engine API says: an impostor or a broken proxy, not a lost connection.
        return f"the Docker daemon misbehaves: {reason}"
    return f"lost Docker: {reason}"


def _subnets(network: Network) -> str:
    return ", ".join(str(subnet) for subnet in network.subnets) or "no subnets"
