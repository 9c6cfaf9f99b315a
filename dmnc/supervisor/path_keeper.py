"""Keeps each address family's routes on the best path: probes the VM's addresses on links it shares with the host
once a second (and at once when the host's addresses change), lets the pure chooser (dmnc.supervisor.path) decide,
and moves the routes through the reconciler. Also tells the VM setup which of the host's addresses to look for
shared links with, and sets the VM side up again when the host gains one the last setup was not told about.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from dmnc.config import Config, PathOption
from dmnc.control import EventBroadcaster
from dmnc.control.messages import PathStatus
from dmnc.routes.hoststate import HostAddressSource
from dmnc.routes.manager import Address, Destination, RouteError
from dmnc.routes.policy import HostNetwork
from dmnc.routes.reconcile import RESUBSCRIBE_SECONDS, RouteReconciler
from dmnc.supervisor.echo_probe import EchoOutcome, probe_echo
from dmnc.supervisor.log import announce, logger
from dmnc.supervisor.path import (
    IP_VERSIONS,
    PROBE_FRESH_S,
    PathChoice,
    ProbeResult,
    ProbeTarget,
    choose_paths,
    direct_host_addresses,
    examine_links,
    probe_targets,
    uplink_interfaces,
)
from dmnc.supervisor.vm_keeper import VmSide
from dmnc.vm.params import MAX_DIRECT_HOSTS

# One probe round a second; a probe waits this long for its answer. With PROBE_FRESH_S (dmnc.supervisor.path) a
# dead next hop is left within about three seconds, a vanished host address at the next round.
PROBE_INTERVAL_S = 1.0
# Said when `--path auto` (the default) first moves a family off the tunnel: 0.1 always used the tunnel.
UPGRADE_HINT = "; `--path tunnel` keeps the routes in the tunnel, as dmnc 0.1 did"
PROBE_ANSWER_WITHIN_S = 1.0


class VmSideSource(Protocol):
    """What the path keeper needs of the VM keeper."""

    @property
    def side(self) -> VmSide | None: ...

    def set_up_again(self) -> None: ...


Prober = Callable[[ProbeTarget, float, int, int], Awaitable[EchoOutcome]]


async def echo_prober(target: ProbeTarget, answer_within_s: float, identifier: int, sequence: int) -> EchoOutcome:
    return await probe_echo(target.address, target.interface, answer_within_s, identifier, sequence)


def path_status(choice: PathChoice) -> PathStatus:
    next_hop = choice.next_hop
    return PathStatus(
        family=f"ipv{choice.version}",
        path=choice.kind.value,
        reason=choice.reason,
        next_hop=None if next_hop is None else str(next_hop.gateway),
        interface=None if next_hop is None else next_hop.interface,
        problem=choice.problem,
    )


class PathKeeper:
    """The direct path's task; see the module docstring."""

    def __init__(
        self,
        routes: RouteReconciler,
        vm: VmSideSource,
        addresses: HostAddressSource | None,
        config: Callable[[], Config],
        events: EventBroadcaster,
        *,
        tunnel_interface: str,
        tunnel_networks: tuple[Destination, ...],
        prober: Prober = echo_prober,
    ) -> None:
        self._routes = routes
        self._vm = vm
        self._addresses = addresses
        self._config = config
        self._events = events
        self._tunnel_interface = tunnel_interface
        self._tunnel_networks = tunnel_networks
        self._prober = prober
        self._networks: tuple[HostNetwork, ...] = ()
        self._uplinks: frozenset[str] = frozenset()
        self._probes: dict[ProbeTarget, ProbeResult] = {}
        self._choices: tuple[PathChoice, ...] = tuple(PathChoice(v, None, "not decided yet") for v in IP_VERSIONS)
        self._identifier = os.getpid() & 0xFFFF
        self._sequence = 0
        self._asked_for: tuple[Address, ...] | None = None
        self._wake = trio.Event()

    @property
    def choices(self) -> tuple[PathChoice, ...]:
        return self._choices

    def status(self) -> tuple[PathStatus, ...]:
        return tuple(path_status(choice) for choice in self._choices)

    def direct_hosts(self) -> tuple[Address, ...]:
        """The host addresses the next VM setup looks for shared links with; none with `--path tunnel`."""
        if self._config().path is PathOption.TUNNEL:
            return ()
        return direct_host_addresses(
            self._networks,
            tunnel_interface=self._tunnel_interface,
            tunnel_networks=self._tunnel_networks,
            limit=MAX_DIRECT_HOSTS,
            uplinks=self._uplinks,
        )

    def wake(self) -> None:
        """Decide again now (the host's addresses changed, the VM was set up again, SIGHUP)."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ready once the host's addresses are read (the first VM setup needs them); then decide every round."""
        await self._read_networks()
        self._asked_for = self.direct_hosts()
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._follow_addresses)
            while True:
                await self.decide()
                with trio.move_on_after(PROBE_INTERVAL_S):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def decide(self) -> tuple[PathChoice, ...]:
        """One round: read the host's addresses, probe the candidates, choose, move the routes."""
        await self._read_networks()
        await self._read_uplinks()
        option = self._config().path
        side = self._vm.side
        candidates = examine_links(
            () if side is None else side.direct_links,
            self._networks,
            tunnel_interface=self._tunnel_interface,
            tunnel_networks=self._tunnel_networks,
            routed=tuple(self._routes.status().routed),
            uplinks=self._uplinks,
        )
        targets = probe_targets(candidates) if option is not PathOption.TUNNEL else ()
        self._probes = {target: result for target, result in self._probes.items() if target in targets}
        async with trio.open_nursery() as nursery:
            for target in targets:
                nursery.start_soon(self._probe, target)
        self._apply(choose_paths(option, candidates, self._probes, trio.current_time()), option)
        self._ask_vm_for_new_hosts()
        return self._choices

    async def _probe(self, target: ProbeTarget) -> None:
        self._sequence = (self._sequence + 1) & 0xFFFF
        outcome = await self._prober(target, PROBE_ANSWER_WITHIN_S, self._identifier, self._sequence)
        now = trio.current_time()
        previous = self._probes.get(target)
        if not outcome.answered and previous is not None and previous.answered and now - previous.at <= PROBE_FRESH_S:
            # The chooser goes by the last answer within PROBE_FRESH_S (dmnc.supervisor.path): a lost echo (ICMP is
            # best-effort, RFC 792) keeps it until it is that old, so one loss does not move every route and back.
            return
        self._probes[target] = ProbeResult(target, outcome.answered, now, outcome.detail)

    def _apply(self, choices: tuple[PathChoice, ...], option: PathOption) -> None:
        for before, after in zip(self._choices, choices, strict=True):
            family = f"IPv{after.version}"
            if before.next_hop != after.next_hop:
                where = "through the tunnel" if after.next_hop is None else f"direct {after.next_hop.describe()}"
                level = logging.WARNING if after.problem else logging.INFO
                # New in this release and the default: whoever relied on the tunnel learns how to keep it.
                keep = UPGRADE_HINT if after.next_hop is not None and option is PathOption.AUTO else ""
                announce(self._events, "path.changed", f"{family} routes go {where}: {after.reason}{keep}", level)
            elif before.reason != after.reason:
                logger.debug("%s path unchanged (%s): %s", family, after.kind.value, after.reason)
            self._routes.set_next_hop(after.version, after.next_hop)
        self._choices = choices

    def _ask_vm_for_new_hosts(self) -> None:
        """A host address the last setup was not told about may be a new shared link: set the VM side up again
        (and with `--path tunnel`, once, to remove the direct rules)."""
        wanted = self.direct_hosts()
        asked_for = self._asked_for or ()
        nothing_new = not set(wanted) - set(asked_for) and (bool(wanted) or not asked_for)
        side = self._vm.side
        # A link the VM opened for a host address no longer offered (now the host's uplink, or gone) must close.
        opened_unwanted = side is not None and bool({link.host_address for link in side.direct_links} - set(wanted))
        already_asked = self._asked_for is not None and set(self._asked_for) == set(wanted)
        if side is None or (nothing_new and not (opened_unwanted and not already_asked)):
            return
        self._asked_for = wanted
        logger.info("the host's addresses changed: setting the VM side up again to look for shared links")
        self._vm.set_up_again()

    async def _read_networks(self) -> None:
        if self._addresses is None:
            return
        try:
            self._networks = await self._addresses.host_networks()
        except RouteError as error:
            logger.warning("could not read the host's addresses for the direct path: %s", error)

    async def _read_uplinks(self) -> None:
        """The interfaces of the host's default routes, from the routing table (the last ones kept on an error)."""
        try:
            routes = await self._routes.manager.list_routes()
        except RouteError as error:
            logger.warning("could not read the host's routes for the direct path: %s", error)
            return
        self._uplinks = uplink_interfaces(routes)

    async def _follow_addresses(self) -> None:
        if self._addresses is None:
            return
        while True:
            try:
                async with self._addresses.address_changes() as changes:
                    async for _ in changes:
                        self.wake()
            except RouteError as error:
                logger.warning("watching the host's addresses for the direct path failed, again: %s", error)
            await trio.sleep(RESUBSCRIBE_SECONDS)
