"""The DNS part of a running dmnc: keeps the name table current, serves it, and points the host's resolver at it.

`run` is a task in the supervisor's nursery. It binds the listeners (port 53 or a fallback), tells the host's
resolver about them (`HostResolver`), answers until cancelled and takes the resolver configuration back on the way
out. A failure here is logged and shown in `dmnc status`; it never ends the service, so the tunnel stays up.

`follow(docker)` runs while Docker is connected (in the Docker watcher's nursery): it lists the running containers
at once (every connect and reconnect is a resync) and again whenever `containers_changed()` is called (container
start, die, rename, network connect/disconnect; Podman's polling), and rebuilds the table when the routed subnets or
the tunnel's IPv6 change.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.name
import trio

from dmnc.dns.answer import Responder, Zone
from dmnc.dns.hint import resolver_hint
from dmnc.dns.names import ContainerEndpoints, NameTable, Reachability, build_table
from dmnc.dns.ratelimit import QueryLimiter, RateLimits
from dmnc.dns.server import DNS_PORT, DnsBindError, DnsServer, Listeners, open_listeners
from dmnc.docker.models import ContainerSummary

logger = logging.getLogger("dmnc.dns")

# How often `follow` compares the routed subnets and the tunnel's IPv6 with those the table was built for: a route
# installed a moment after the containers were listed makes their names appear within this long.
REACHABILITY_CHECK_S = 0.5
# Bounds the time the host's resolver configuration may take to be removed at stop.
HOST_RESOLVER_BUDGET_S = 2.0


class HostResolverError(Exception):
    """The host's resolver could not be pointed at dmnc (or set back); the message says what to do."""


class ContainerLister(Protocol):
    async def list_containers(self) -> list[ContainerSummary]: ...


class HostResolver(Protocol):
    """Points the host's system resolver at dmnc for the domain (macOS /etc/resolver, systemd-resolved)."""

    async def apply(self, domain: dns.name.Name, addresses: Sequence[str], port: int) -> str:
        """Configure the host; returns how (for status), raises HostResolverError."""
        ...

    async def watch(self) -> None:
        """Keep the configuration in place (apply it again when another program undoes it) until cancelled."""
        ...

    async def remove(self) -> None:
        """Take the configuration back; raises HostResolverError."""
        ...


@dataclass(frozen=True)
class DnsState:
    """For `dmnc status`: the domain, where it is served, the record count, when the table last changed."""

    domain: str
    port: int | None = None
    addresses: tuple[str, ...] = ()
    records: int = 0
    last_update: float | None = None  # trio.current_time() of the last table change
    problem: str | None = None
    host_resolver: str | None = None  # how the host asks dmnc, or why it does not


def endpoints_of(container: ContainerSummary) -> ContainerEndpoints:
    return ContainerEndpoints(container.id, container.name, container.labels, container.networks)


class DnsService:
    def __init__(
        self,
        domain: dns.name.Name,
        addresses: Sequence[str],
        reachability: Callable[[], Reachability],
        host_resolver: HostResolver | None,
        *,
        port: int = DNS_PORT,
        limits: RateLimits | None = None,
    ) -> None:
        self._domain = domain
        self._addresses = tuple(addresses)
        self._reachability = reachability
        self._host_resolver = host_resolver
        self._port = port
        self.responder = Responder(Zone(domain, NameTable()))
        self.limiter = QueryLimiter(limits or RateLimits(), trio.current_time())
        self.server: DnsServer | None = None
        self._containers: list[ContainerEndpoints] = []
        self._built_for: Reachability | None = None
        self._changed = trio.Event()
        self.state = DnsState(domain=domain.to_text(omit_final_dot=True))

    def drops(self) -> dict[str, int]:
        """Queries dropped (rate limits, malformed, responses), answers not sent, FORMERR answers: by reason."""
        counted = {
            "rate_limited_source": self.limiter.dropped_per_source,
            "rate_limited_global": self.limiter.dropped_global,
            "malformed": self.responder.outcomes["dropped_malformed"],
            "responses": self.responder.outcomes["dropped_response"],
            "formerr": self.responder.outcomes["formerr"],
        }
        if self.server is not None:
            counted.update(self.server.counters)
        return {reason: count for reason, count in counted.items() if count}

    def containers_changed(self) -> None:
        """A container or a network attachment changed: list the containers again."""
        self._changed.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            listeners = await open_listeners(self._addresses, self._port)
        except DnsBindError as error:
            self.state = dataclasses.replace(self.state, problem=f"not serving: {error}")
            logger.warning("DNS: %s; container names do not resolve (the tunnel is unaffected)", error)
            task_status.started()
            return
        self.server = DnsServer(self.responder, self.limiter, listeners)
        self.state = dataclasses.replace(self.state, port=listeners.port, addresses=listeners.addresses)
        logger.info(
            "DNS: answering for %s on %s port %d", self.state.domain, ", ".join(listeners.addresses), listeners.port
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.server.serve)
                host_resolver = self._host_resolver
                if host_resolver is not None and await self._apply_host_resolver(host_resolver, listeners):
                    nursery.start_soon(host_resolver.watch)
                task_status.started()
        finally:
            listeners.close()
            if self._host_resolver is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(HOST_RESOLVER_BUDGET_S):
                    try:
                        await self._host_resolver.remove()
                    except HostResolverError as error:
                        logger.warning("DNS: %s", error)

    async def follow(self, docker: ContainerLister) -> None:
        """Keep the table equal to Docker's running containers until cancelled (Docker lost)."""
        self._changed.set()
        while True:
            with trio.move_on_after(REACHABILITY_CHECK_S):
                await self._changed.wait()
            if self._changed.is_set():
                self._changed = trio.Event()
                self._containers = [endpoints_of(container) for container in await docker.list_containers()]
                self._rebuild()
            elif self._reachability() != self._built_for:
                self._rebuild()

    def _rebuild(self) -> None:
        reachable = self._reachability()
        table = build_table(self._containers, reachable)
        self._built_for = reachable
        if table == self.responder.zone.table:
            return
        self.responder.zone = Zone(self._domain, table, self.responder.zone.serial + 1)
        self.state = dataclasses.replace(self.state, records=len(table), last_update=trio.current_time())
        logger.debug("DNS: %d names", len(table))

    async def _apply_host_resolver(self, host_resolver: HostResolver, listeners: Listeners) -> bool:
        addresses, port = listeners.addresses, listeners.port
        try:
            how = await host_resolver.apply(self._domain, addresses, port)
        except HostResolverError as error:
            self.state = dataclasses.replace(self.state, host_resolver=f"not configured: {error}")
            logger.warning(
                "DNS: could not point the host's resolver at dmnc: %s; %s",
                error,
                resolver_hint(self.state.domain, addresses, port),
            )
            return False
        self.state = dataclasses.replace(self.state, host_resolver=how)
        logger.info("DNS: the host asks dmnc for %s: %s", self.state.domain, how)
        return True
