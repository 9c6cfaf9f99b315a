"""Keep the installed routes equal to the routes the policy wants.

`plan_changes` is the pure part: desired set vs installed set -> the minimal adds and deletes. `RouteReconciler`
is the one trio task around it; it applies each plan through the manager's batch calls, so one refused route
does not hold up the others, and remembers per subnet why a route could not be installed. A pass runs on every
trigger (network event, full resync after a reconnect, a route change seen by the monitor), triggers that arrive
during a pass coalesce into one more pass, and each pass re-reads the routing table, so a lost notification
costs at most one pass of delay and never a wrong table.
"""

from __future__ import annotations

import errno
import logging
import subprocess
import sys
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from dmnc.logsetup import printable
from dmnc.routes.manager import (
    Destination,
    InstalledRoute,
    NextHop,
    RouteError,
    RouteEvent,
    RouteEventKind,
    RouteManager,
    RouteOperationError,
    RouteResult,
    Shadow,
    ShadowCheck,
    probe_address,
    route_in_place,
)
from dmnc.routes.policy import (
    NEW_RULES,
    HostState,
    NetworkInfo,
    OverlapFinding,
    PolicyConfig,
    PolicyResult,
    Skipped,
    SkipReason,
    evaluate,
    force_routes_warning,
)

logger = logging.getLogger(__name__)

# A pass that failed (the OS refused a change) is retried after this many seconds even without a new trigger.
RETRY_AFTER_FAILURE_SECONDS = 2.0
# A route monitor that failed (or ended) is opened again after this many seconds.
RESUBSCRIBE_SECONDS = 1.0
# A program that keeps taking one of our routes (some VPN clients re-assert theirs at once) would otherwise make
# both sides fight forever: after this many restores of one destination within the window, dmnc stops restoring
# it and says so. A network event or resync evaluates it afresh, as a subnet dmnc never routed: with the other
# program's route in place, the overlap rule (and --force-routes) decides.
MAX_RESTORES = 5
RESTORE_WINDOW_SECONDS = 60.0
# What the kernel answers for a gateway route whose gateway is on no connected link any more (ip-route(8); Linux
# fib_check_nh, xnu rtrequest): the direct path's link went away.
NEXT_HOP_GONE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH})


def _sort_key(destination: Destination) -> tuple[int, Destination]:
    return destination.version, destination


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The minimal changes that turn the installed set into the desired set, in a stable order."""

    add: tuple[Destination, ...]
    delete: tuple[Destination, ...]

    @property
    def empty(self) -> bool:
        return not self.add and not self.delete


def plan_changes(desired: Set[Destination], installed: Set[Destination]) -> RoutePlan:
    return RoutePlan(
        add=tuple(sorted(desired - installed, key=_sort_key)),
        delete=tuple(sorted(installed - desired, key=_sort_key)),
    )


# How long `ps` may take to name a process before the log line goes without the name.
PS_TIMEOUT_S = 2.0


def describe_sender(pid: int | None, platform: str = sys.platform) -> str:
    """Who changed a route, as far as the OS tells: "pid 123 (openconnect)", or "the kernel"."""
    if pid is None:
        return "the kernel or an unknown process"
    command = _process_name(pid, platform)
    if not command:
        return f"pid {pid}"
    return f"pid {pid} ({printable(command)})"


def _process_name(pid: int, platform: str) -> str | None:
    """The command name of `pid`: /proc/PID/comm on Linux (proc(5)); elsewhere `ps -o comm= -p PID` (ps(1), no
    shell; macOS has no /proc). None when the process is gone or the name cannot be read."""
    if platform.startswith("linux"):
        try:
            return Path(f"/proc/{pid}/comm").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None
    try:
        completed = subprocess.run(
            ["ps", "-o", "comm=", "-p", str(pid)], capture_output=True, text=True, timeout=PS_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired, UnicodeDecodeError):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


# `SubnetStatus.decision` of a subnet the policy wants: installed, or not (yet). A subnet the policy leaves out
# carries its rule's name instead (`SkipReason.decision`).
DECISION_ROUTED = "routed"
DECISION_PENDING = "pending"
DECISION_GIVEN_UP = "given-up"
DECISION_INSTALL_FAILED = "install-failed"
# Installed, but a policy rule sends the subnet's traffic to another table (the kernel's own lookup says so).
DECISION_SHADOWED = "shadowed"
SHADOW_FIX = (
    "the route is in the main table, but that rule is evaluated before it: turn off what installed the rule (a VPN's "
    "exit node or full tunnel), or let the main table win for this subnet with `ip rule add to SUBNET lookup main "
    "pref N`, N smaller than that rule's priority"
)
# macOS: one table, so the winner is a more specific route there that the overlap rules do not list (a host route
# or a clone another tunnel left behind, such as docker-mac-net-connect's to 10.33.33.2).
SINGLE_TABLE_SHADOW_FIX = (
    "`route -n get ADDRESS` shows the route the kernel uses instead: stop the program that added it (another VPN or "
    "tunnel, docker-mac-net-connect), or delete that route (`sudo route -n delete` with its destination)"
)


@dataclass(frozen=True, slots=True)
class SubnetStatus:
    """One subnet of a known network: routed through the tunnel or not, and why not."""

    network: str
    subnet: Destination
    installed: bool
    reason: str | None = None  # why it is not installed: the rule, what it found, and the fix
    decision: str = DECISION_ROUTED


@dataclass(frozen=True, slots=True)
class ReconcilerStatus:
    routed: frozenset[Destination]
    subnets: tuple[SubnetStatus, ...]
    overlaps: tuple[OverlapFinding, ...]
    passes: int
    last_error: str | None
    dropped_messages: Mapping[str, int] = field(default_factory=dict)  # malformed kernel messages, by reason
    # Networks left out whole that have no subnet to list in `subnets` (no IPAM config, a malformed one), by
    # decision: "malformed": 2.
    skipped_networks: Mapping[str, int] = field(default_factory=dict)


class RouteHooks(Protocol):
    """Told around route changes, so what the route sends somewhere can be ready before it and kept until after it
    (the VM peer's allowed IPs: dmnc.supervisor.peer_subnets)."""

    def before_add(self, destinations: Sequence[Destination]) -> None:
        """These routes are about to be added (or are installed already and kept)."""

    def after_delete(self, destinations: Sequence[Destination]) -> None:
        """These routes are gone (deleted, or an add of them failed)."""


class RouteReconciler:
    """Routes for the networks it is told about, through `manager`, defended against other programs.

    Until `set_networks` is called the wanted set is unknown and nothing is touched. Routes are not removed when
    the task ends (losing Docker must not cut off reachable containers); `withdraw` removes them on clean shutdown.
    """

    def __init__(
        self,
        manager: RouteManager,
        config: PolicyConfig,
        *,
        resync_interval: float = 300.0,
        on_withdrawn: Callable[[Skipped], None] | None = None,
        hooks: RouteHooks | None = None,
    ) -> None:
        self._manager = manager
        self._hooks = hooks
        self._config = config
        self._host = HostState()
        # Told when a subnet dmnc routed is left out by a rule (host state changed, a VPN took it): a status event.
        self._on_withdrawn = on_withdrawn
        self._force_warned = False
        self._warn_if_forced()
        # The last decision logged per (network, subnet) left out, so each change is logged once.
        self._logged_skips: dict[tuple[str, Destination | None], Skipped] = {}
        self._upgrade_noted: set[tuple[str, Destination]] = set()
        # Subnets dmnc withdrew because another program routes them more specifically: they count as routed by
        # dmnc before that route, so they keep saying who took them, and come back when it goes.
        self._yielded: set[Destination] = set()
        self._resync_interval = resync_interval
        self._networks: dict[str, NetworkInfo] | None = None
        self._wake = trio.Event()
        self._requested = 0  # triggers so far; a pass serves every trigger that came before it started
        self._served = 0
        self._served_changed = trio.Event()
        self._routed: set[Destination] = set()  # what dmnc installed and still stands behind
        self._restores: dict[Destination, deque[float]] = {}
        self._given_up: set[Destination] = set()
        # Why the last pass that got to apply its plan could not add a wanted route; replaced only when a pass
        # has its own answer, so `status` read while a pass runs shows the last one's.
        self._install_failures: dict[Destination, str] = {}
        # Installed routes the kernel does not use, by what it uses instead (ShadowCheck managers only).
        self._shadowed: dict[Destination, Shadow] = {}
        self._overlaps: tuple[OverlapFinding, ...] = ()
        self._last_result: PolicyResult | None = None
        self._passes = 0
        self._last_error: str | None = None

    @property
    def manager(self) -> RouteManager:
        return self._manager

    # Inputs from the Docker side.

    def set_networks(self, networks: Iterable[NetworkInfo]) -> None:
        """All networks, after connecting or reconnecting to Docker: anything not in here loses its route."""
        self._networks = {network.id: network for network in networks}
        self._given_up.clear()
        self._restores.clear()
        self.trigger()

    def update_network(self, network: NetworkInfo) -> None:
        """A network was created or changed."""
        if self._networks is None:
            self._networks = {}
        self._networks[network.id] = network
        for subnet in network.subnets:
            self._given_up.discard(subnet)
            self._restores.pop(subnet, None)
        self.trigger()

    def remove_network(self, network_id: str) -> None:
        if self._networks is not None and self._networks.pop(network_id, None) is not None:
            self.trigger()

    def set_policy(self, config: PolicyConfig) -> None:
        """New route options (SIGHUP reload); the next pass applies them."""
        self._config = config
        self._warn_if_forced()
        self.trigger()

    def set_host_state(self, host: HostState) -> None:
        """The host's own addresses, DNS servers and VM endpoint changed: re-evaluate against them."""
        if host != self._host:
            self._host = host
            self.trigger()

    def set_next_hop(self, version: int, next_hop: NextHop | None) -> None:
        """Send IP `version`'s routes via `next_hop` (the direct path), or through the tunnel with None; the next
        pass moves the installed routes over (each replaced in place, so no subnet is ever without a route)."""
        if self._manager.next_hop(version) != next_hop:
            self._manager.set_next_hop(version, next_hop)
            self.trigger()

    def _where(self, destination: Destination) -> str:
        """Where dmnc's route to `destination` goes now, for log lines."""
        return self._where_version(destination.version)

    def _where_version(self, version: int) -> str:
        next_hop = self._manager.next_hop(version)
        return f"dev {self._manager.interface}" if next_hop is None else next_hop.describe()

    def _warn_if_forced(self) -> None:
        if not self._force_warned and (warning := force_routes_warning(self._config)):
            logger.warning("%s", warning)
            self._force_warned = True

    def trigger(self) -> None:
        self._requested += 1
        self._wake.set()

    def status(self) -> ReconcilerStatus:
        """What the last pass found and did, per subnet, for `dmnc status`."""
        subnets: list[SubnetStatus] = []
        if self._last_result is not None:
            for wanted in self._last_result.wanted:
                installed = wanted.subnet in self._routed
                reason = None
                decision = DECISION_ROUTED if installed else DECISION_PENDING
                if wanted.subnet in self._given_up:
                    reason = "taken by another program"
                    decision = DECISION_GIVEN_UP
                elif installed and wanted.subnet in self._shadowed:
                    installed = False
                    shadow = self._shadowed[wanted.subnet]
                    reason = f"{shadow.describe()}; {shadow_fix(wanted.subnet, shadow)}"
                    decision = DECISION_SHADOWED
                elif wanted.subnet in self._install_failures and not installed:
                    reason = f"could not install: {self._install_failures[wanted.subnet]}"
                    decision = DECISION_INSTALL_FAILED
                elif not installed:
                    reason = f"failed: {self._last_error}" if self._last_error else "not installed yet"
                subnets.append(SubnetStatus(wanted.network, wanted.subnet, installed, reason, decision))
            subnets.extend(
                SubnetStatus(skip.network, skip.subnet, False, skip.describe(), skip.reason.decision)
                for skip in self._last_result.skipped
                if skip.subnet is not None
            )
        skipped = () if self._last_result is None else self._last_result.skipped
        return ReconcilerStatus(
            frozenset(self._routed),
            tuple(subnets),
            self._overlaps,
            self._passes,
            self._last_error,
            dict(self._manager.dropped_messages),
            Counter(skip.reason.decision for skip in skipped if skip.subnet is None),
        )

    async def settled(self) -> None:
        """Return once a pass that started after this call's triggers has finished."""
        wanted = self._requested
        while self._served < wanted:
            await self._served_changed.wait()

    # The task.

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; ready (started) once the monitor is subscribed."""
        not_subscribed: RouteError | None = None
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(self._watch)
            except RouteError as error:
                not_subscribed = error  # raised below, outside the nursery, as itself rather than in a group
            else:
                task_status.started()
                await self._reconcile_forever()
        if not_subscribed is not None:
            raise not_subscribed

    async def _reconcile_forever(self) -> None:
        while True:
            timeout = RETRY_AFTER_FAILURE_SECONDS if self._last_error else self._resync_interval
            with trio.move_on_after(timeout):
                await self._wake.wait()
            self._wake = trio.Event()
            serving = self._requested
            await self._pass()
            self._served = serving
            self._served_changed.set()
            self._served_changed = trio.Event()

    async def withdraw(self) -> None:
        """Remove every route dmnc installed through the interface (clean shutdown). Safe while `run` is still
        running: the wanted set becomes empty first, so no pass puts a route back."""
        self._networks = {}
        results = await self._manager.delete_many([route.destination for route in await self._manager.list_ours()])
        self._routed.difference_update(result.destination for result in results if result.error is None)
        self._after_delete(results)
        _raise_failures(results)
        self._routed.clear()

    async def _watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the routing table's changes. A monitor that fails after the first subscription is opened again
        (a pass follows, for what happened meanwhile) rather than taking the whole service down."""
        subscribed = False
        while True:
            try:
                async with self._manager.monitor() as events:
                    if subscribed:
                        logger.info("route monitor subscribed again")
                        self.trigger()
                    else:
                        subscribed = True
                        task_status.started()
                    await self._follow(events)
            except RouteError as error:
                if not subscribed:
                    raise
                logger.error(  # noqa: TRY400 (an OS failure, not a bug: no traceback)
                    "route monitor failed, subscribing again in %.0f s: %s", RESUBSCRIBE_SECONDS, error
                )
            await trio.sleep(RESUBSCRIBE_SECONDS)

    async def _follow(self, events: AsyncIterator[RouteEvent]) -> None:
        async for event in events:
            if event.caused_by_us:
                continue
            if event.kind is RouteEventKind.INTERFACE_CHANGED:
                # Routes lost with the interface were not taken by anyone: they do not count as fights.
                self._restores.clear()
            route = event.route
            if route is not None and self._lost_with_next_hop(event, route):
                self.trigger()
                continue
            if route is not None and route.destination in self._routed:
                who = describe_sender(event.sender_pid)
                if event.kind is RouteEventKind.REMOVED and route.ours:
                    logger.warning("route %s was deleted by %s; putting it back", route.describe(), who)
                elif event.kind is RouteEventKind.ADDED and not route.ours:
                    # Either it replaced ours (the pass puts ours back) or it sits beside ours with another
                    # metric (the overlap finding says so): the pass finds out which.
                    logger.warning(
                        "%s added another route to %s, which dmnc routes: %s", who, route.destination, route.describe()
                    )
            self.trigger()

    def _lost_with_next_hop(self, event: RouteEvent, route: InstalledRoute) -> bool:
        """The kernel removed one of dmnc's routes via its family's next hop: that link or address is gone (the
        kernel drops routes through a vanished gateway itself). Not a fight: the family goes through the tunnel at
        once, until the path keeper (dmnc.supervisor.path_keeper) finds the next hop answering again."""
        version = route.destination.version
        next_hop = self._manager.next_hop(version)
        if (
            event.kind is not RouteEventKind.REMOVED
            or not route.ours
            or event.sender_pid is not None
            or route.gateway is None
            or (next_hop is not None and route.gateway != next_hop.gateway)
        ):
            return False
        if next_hop is not None:
            logger.info(
                "route %s went with its next hop's link: IPv%d routes go through %s", route.describe(), version,
                self._manager.interface,
            )  # fmt: skip
            self._manager.set_next_hop(version, None)
        self._routed.discard(route.destination)  # added again through the tunnel, as a new route
        return True

    async def _pass(self) -> None:
        self._passes += 1
        if self._networks is None:
            return
        failure: RouteError | None = None
        try:
            routes = await self._manager.list_routes()
            result = self._evaluate(self._networks.values(), routes)
            await self._apply(result, routes)
            await self._check_shadows()
        except RouteError as error:
            failure = error
        previous_error, self._last_error = self._last_error, None if failure is None else str(failure)
        if self._last_error is None:
            if previous_error is not None:
                logger.info("route reconciliation recovered")
            return
        # A lasting failure (say IPv6 disabled on the tunnel) is retried every few seconds: say it once.
        level = logging.DEBUG if self._last_error == previous_error else logging.ERROR
        logger.log(
            level, "route reconciliation failed, retrying every %.0f s: %s", RETRY_AFTER_FAILURE_SECONDS, failure
        )

    def _evaluate(self, networks: Iterable[NetworkInfo], routes: list[InstalledRoute]) -> PolicyResult:
        # Routes through our own interface lead where ours would; only other interfaces can conflict.
        others = [route for route in routes if not route.ours and route.interface != self._manager.interface]
        result = evaluate(networks, self._config, others, already_routed=self._routed | self._yielded, host=self._host)
        self._yielded = {skip.subnet for skip in result.skipped if skip.reason is SkipReason.TAKEN and skip.subnet}
        self._log_skips(result.skipped)
        previous = set(self._overlaps)
        for finding in result.overlaps:
            if finding not in previous:
                logger.warning("%s", finding.describe())
        for finding in previous - set(result.overlaps):
            logger.info("overlap resolved: %s", finding.describe())
        self._overlaps = result.overlaps
        self._last_result = result
        return result

    def _log_skips(self, skipped: Iterable[Skipped]) -> None:
        """One log line per subnet left out, when its decision changes. A subnet dmnc routed and now leaves out
        is a withdrawal (WARNING and `on_withdrawn`); one left out by a rule dmnc 0.1 did not have gets one WARNING
        per run, as it was routed before the upgrade."""
        logged: dict[tuple[str, Destination | None], Skipped] = {}
        for skip in skipped:
            if skip.subnet is None:
                logged[(skip.network, None)] = skip
                malformed = skip.reason is SkipReason.MALFORMED
                if malformed and self._logged_skips.get((skip.network, None)) != skip:
                    logger.warning("network %r is not routed: %s", skip.network, skip.describe())
                continue
            key = (skip.network, skip.subnet)
            logged[key] = skip
            if self._logged_skips.get(key) == skip:
                continue
            if skip.subnet in self._routed:
                logger.warning("network %r subnet %s: withdrawing its route: %s", *key, skip.describe())
                if self._on_withdrawn is not None:
                    self._on_withdrawn(skip)
            elif skip.reason in NEW_RULES and key not in self._upgrade_noted:
                self._upgrade_noted.add(key)
                logger.warning("network %r subnet %s is not routed (dmnc 0.1 routed it): %s", *key, skip.describe())
            elif skip.reason is not SkipReason.OVERLAP:  # overlaps have their own line, naming both routes
                logger.info("network %r subnet %s is not routed: %s", *key, skip.describe())
        self._logged_skips = logged

    async def _check_shadows(self) -> None:
        """Ask the kernel which route it really uses for each installed subnet; say when that changes."""
        if not isinstance(self._manager, ShadowCheck):
            return
        shadowed: dict[Destination, Shadow] = {}
        for destination in sorted(self._routed, key=_sort_key):
            shadow = await self._manager.shadow_of(destination)
            if shadow is not None:
                shadowed[destination] = shadow
        for destination, shadow in shadowed.items():
            if self._shadowed.get(destination) != shadow:
                logger.warning(
                    "route %s dev %s is not used: %s; %s",
                    destination,
                    self._manager.interface,
                    shadow.describe(),
                    shadow_fix(destination, shadow),
                )
        for destination in self._shadowed.keys() - shadowed.keys():
            logger.info("route %s dev %s is used again", destination, self._manager.interface)
        self._shadowed = shadowed

    def _may_restore(self, destination: Destination) -> bool:
        now = trio.current_time()
        history = self._restores.setdefault(destination, deque())
        while history and now - history[0] > RESTORE_WINDOW_SECONDS:
            history.popleft()
        if len(history) >= MAX_RESTORES:
            if destination not in self._given_up:
                logger.error(
                    "route to %s was taken away %d times in %.0f s; no longer restoring it until the network changes",
                    destination,
                    MAX_RESTORES,
                    RESTORE_WINDOW_SECONDS,
                )
                self._given_up.add(destination)
            return False
        history.append(now)
        return True

    async def _apply(self, result: PolicyResult, routes: list[InstalledRoute]) -> None:
        ours = {route.destination for route in routes if route.ours}
        # Ours, and going where its family goes now (tunnel or next hop); the others are moved by a replace.
        placed = {
            route.destination
            for route in routes
            if route.ours
            and route_in_place(route, self._manager.interface, self._manager.next_hop(route.destination.version))
        }
        desired = set(result.desired) - self._given_up
        plan = plan_changes(desired, placed)
        plan = RoutePlan(plan.add, tuple(sorted((ours - desired), key=_sort_key)))
        self._routed.intersection_update(desired)
        results: list[RouteResult] = []
        install_failures: dict[Destination, str] = {}
        if self._hooks is not None:
            self._hooks.before_add(sorted(desired & ours, key=_sort_key))
        if plan.delete:
            deleted = await self._manager.delete_many(plan.delete)
            self._after_delete(deleted)
            for outcome in deleted:
                if outcome.changed:
                    logger.info("removed route %s", outcome.destination)
            results += deleted
        moves = [destination for destination in plan.add if destination in ours]  # a path change, not a fight
        restores = [destination for destination in plan.add if destination in self._routed and destination not in ours]
        new = [destination for destination in plan.add if destination not in self._routed and destination not in ours]
        allowed_restores = [destination for destination in restores if self._may_restore(destination)]
        self._routed.difference_update(set(restores) - set(allowed_restores))
        # A restore replaces, as the destination may now be routed elsewhere by the program that took ours; a move
        # replaces our own route, so the subnet is never without one.
        for batch, replace in ((new, False), (allowed_restores + moves, True)):
            if not batch:
                continue
            if self._hooks is not None:
                self._hooks.before_add(batch)
            added = await self._add_falling_back(batch, replace=replace)
            if self._hooks is not None:
                self._hooks.after_delete([outcome.destination for outcome in added if outcome.error is not None])
            for outcome in added:
                if outcome.error is not None:
                    install_failures[outcome.destination] = _reason(outcome.error)
                    continue
                self._routed.add(outcome.destination)
                action = "moved" if outcome.destination in ours else "restored" if replace else "added"
                logger.info("%s route %s %s", action, outcome.destination, self._where(outcome.destination))
            results += added
        self._routed.update(desired & ours)
        self._install_failures = install_failures
        _raise_failures(results)

    async def _add_falling_back(self, batch: Sequence[Destination], *, replace: bool) -> list[RouteResult]:
        """`add_many`; where the kernel finds a family's next hop unreachable (its link went, and with it, silently,
        its IPv4 routes), that family goes through the tunnel at once and its routes are added there."""
        added = await self._manager.add_many(batch, replace=replace)
        unreachable = {
            outcome.destination.version
            for outcome in added
            if isinstance(outcome.error, RouteOperationError)
            and outcome.error.errno in NEXT_HOP_GONE_ERRNOS
            and self._manager.next_hop(outcome.destination.version) is not None
        }
        if not unreachable:
            return added
        for version in sorted(unreachable):
            logger.info(
                "IPv%d routes %s are unreachable: they go through %s", version, self._where_version(version),
                self._manager.interface,
            )  # fmt: skip
            self._manager.set_next_hop(version, None)
        again = [outcome.destination for outcome in added if outcome.destination.version in unreachable]
        retried = dict(zip(again, await self._manager.add_many(again, replace=replace), strict=True))
        return [retried.get(outcome.destination, outcome) for outcome in added]

    def _after_delete(self, deleted: Iterable[RouteResult]) -> None:
        if self._hooks is not None:
            self._hooks.after_delete([outcome.destination for outcome in deleted if outcome.error is None])


def shadow_fix(subnet: Destination, shadow: Shadow) -> str:
    """What a user can do about a shadowed route of `subnet`."""
    fix = SHADOW_FIX if shadow.table is not None else SINGLE_TABLE_SHADOW_FIX
    return fix.replace("SUBNET", str(subnet)).replace("ADDRESS", str(probe_address(subnet)))


def _reason(error: RouteError) -> str:
    """Why one destination failed, without the operation and destination its message repeats."""
    if isinstance(error, RouteOperationError):
        return f"{error.reason} (errno {error.errno})"
    return str(error)


def _raise_failures(results: Iterable[RouteResult]) -> None:
    """Raise the failures among `results`: the error itself when one destination failed, else one naming all."""
    failures = [result.error for result in results if result.error is not None]
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise RouteError("; ".join(str(error) for error in failures))
