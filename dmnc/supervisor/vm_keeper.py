"""The VM side of the tunnel: set it up, watch its health from our own counters, set it up again when it goes stale,
and remove it on stop.

The health verdict is a pure core (`VmHealth`: fed `now` and the VM peer's counters, no clock, no I/O); `VmKeeper`
runs it once a second and does the setups. The VM side is declared stale from our counters (no authenticated packet
for longer than `Config.vm_stale_after`), never by polling the daemon, so a VM that Docker Desktop's Resource Saver
put to sleep is not kept awake by dmnc.

A VM interface that is another program's (ForeignInterfaceError: docker-mac-net-connect's chip0) is never touched:
in the foreground the error ends dmnc; as a service the keeper waits in standby (`standby` says why, for `dmnc
status`) and tries again every VM_STANDBY_RECHECK_S until the interface is gone.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from dmnc.config import Config, format_host_port
from dmnc.control import EventBroadcaster
from dmnc.docker.client import DockerClient
from dmnc.docker.errors import DockerError
from dmnc.logsetup import printable
from dmnc.routes.manager import Address
from dmnc.routes.policy import VmIpv6
from dmnc.supervisor.backoff import Backoff
from dmnc.supervisor.conflicts import StandbyReport
from dmnc.supervisor.log import announce, logger
from dmnc.supervisor.peer_subnets import VmPeerSubnets
from dmnc.tunnel.datapath import Tunnel
from dmnc.tunnel.udp import UdpEndpoint
from dmnc.vm.errors import ForeignInterfaceError, VmSetupError
from dmnc.vm.nftables import DockerNftables, unmarked_fix, unmarked_problem
from dmnc.vm.params import DEFAULT_INTERFACE, SetupParams
from dmnc.vm.result import DirectLink, SetupResult
from dmnc.vm.runner import VmSetupRunner
from dmnc.vm.shims import Shim
from dmnc.wireguard import Device, PeerConfig, PeerStats
from dmnc.wireguard.constants import REKEY_TIMEOUT

# The VM side sends a persistent keepalive this often (PERSISTENT_KEEPALIVE in dmnc/vm/setup.sh). A stale limit
# below it plus one REKEY_TIMEOUT (whitepaper section 6.1) declares an idle but healthy VM side stale.
VM_KEEPALIVE_S = 25.0
SHORTEST_SENSIBLE_STALE_AFTER_S = VM_KEEPALIVE_S + REKEY_TIMEOUT
# After a setup the VM's first handshake normally arrives within a second; this long without one, set up again.
FIRST_HANDSHAKE_GRACE_S = 20.0
HEALTH_INTERVAL_S = 1.0
# A VM that stays silent right after a setup is asleep or broken: further setups wait for a container start, or
# this long (doubling) at most, so dmnc does not keep a Resource Saver VM awake.
QUIET_VM_RETRY_INITIAL_S = 60.0
QUIET_VM_RETRY_MAX_S = 900.0
# A failing VM setup (image build offline, a broken VM) is retried more patiently.
SETUP_RETRY_INITIAL_S = 2.0
SETUP_RETRY_MAX_S = 60.0
# Each check runs a one-shot setup container in the VM: a foreign interface is looked at again this often.
VM_STANDBY_RECHECK_S = 30.0


class Verdict(enum.Enum):
    """What the VM side's counters say, as of one health check."""

    NOT_SET_UP = "no VM side set up yet"
    AWAITING_FIRST_HANDSHAKE = "set up; its first packet is not overdue yet"
    HEALTHY = "heard from within the stale limit"
    FIRST_HANDSHAKE_OVERDUE = "set up, but no packet within the first-handshake grace period"
    STALE = "silent for longer than the stale limit"

    @property
    def needs_setup(self) -> bool:
        return self in {Verdict.FIRST_HANDSHAKE_OVERDUE, Verdict.STALE}


@dataclass(frozen=True)
class HealthEvent:
    """Something to tell: `kind` is its event-feed kind, None for a log line only."""

    kind: str | None
    message: str
    level: int = logging.INFO


@dataclass(frozen=True)
class HealthCheck:
    verdict: Verdict
    events: tuple[HealthEvent, ...] = ()


class VmHealth:
    """The VM side's health from the VM peer's counters (sans-I/O: `now` is an argument).

    The first handshake is announced once per peer; "stale" (no packet for `stale_after` seconds, or none at all
    within `first_handshake_grace` of a setup) is announced once per setup.
    """

    def __init__(self, first_handshake_grace: float = FIRST_HANDSHAKE_GRACE_S) -> None:
        self._first_handshake_grace = first_handshake_grace
        self._set_up_at: float | None = None
        self._handshakes_seen = 0
        self._rx_packets_seen = 0
        self._last_rx_at: float | None = None
        self._declared_stale = False

    def peer_added(self, peer: PeerStats) -> None:
        """A new VM peer: count its handshakes and packets from here."""
        self._handshakes_seen = peer.handshakes
        self._rx_packets_seen = peer.rx_packets

    def set_up(self, now: float) -> None:
        """The VM side was (re)configured at `now`: its silence is measured from here."""
        self._set_up_at = now
        self._declared_stale = False

    @property
    def silent_since_setup(self) -> bool:
        """Set up, and not one packet from the VM side since."""
        return self._set_up_at is not None and (self._last_rx_at is None or self._last_rx_at < self._set_up_at)

    def check(self, now: float, peer: PeerStats, stale_after: float) -> HealthCheck:
        events: list[HealthEvent] = []
        if peer.handshakes != self._handshakes_seen:
            if self._handshakes_seen == 0:
                endpoint = "an unknown endpoint" if peer.endpoint is None else format_host_port(*peer.endpoint)
                events.append(HealthEvent("tunnel.up", f"tunnel up: the VM handshook from {endpoint}"))
            else:
                events.append(HealthEvent(None, f"handshake with the VM ({peer.handshakes} so far)", logging.DEBUG))
            self._handshakes_seen = peer.handshakes
        if peer.rx_packets != self._rx_packets_seen:
            self._rx_packets_seen = peer.rx_packets
            self._last_rx_at = now
        set_up_at, last_rx_at = self._set_up_at, self._last_rx_at
        if set_up_at is None:
            return HealthCheck(Verdict.NOT_SET_UP, tuple(events))
        if last_rx_at is None or last_rx_at < set_up_at:
            silent_for, limit = now - set_up_at, self._first_handshake_grace
            verdict = Verdict.FIRST_HANDSHAKE_OVERDUE if silent_for > limit else Verdict.AWAITING_FIRST_HANDSHAKE
        else:
            silent_for, limit = now - last_rx_at, stale_after
            verdict = Verdict.STALE if silent_for > limit else Verdict.HEALTHY
        if verdict.needs_setup and not self._declared_stale:
            self._declared_stale = True
            events.append(
                HealthEvent(
                    "vm.stale",
                    f"nothing heard from the VM side for {silent_for:.0f} s: setting it up again",
                    logging.WARNING,
                )
            )
        return HealthCheck(verdict, tuple(events))


def stale_after_warning(stale_after: float) -> str | None:
    """The log line for a stale limit an idle, healthy VM side would exceed, or None."""
    if stale_after >= SHORTEST_SENSIBLE_STALE_AFTER_S:
        return None
    return (
        f"vm_stale_after is {stale_after:g} s, below the VM's keepalive interval plus REKEY_TIMEOUT"
        f" ({SHORTEST_SENSIBLE_STALE_AFTER_S:g} s): an idle VM side will be set up again and again"
    )


@dataclass(frozen=True)
class VmSide:
    """The VM side as the last setup left it, and its peer on our device."""

    peer: PeerStats
    public_key: bytes
    mode: str
    endpoint_name: str
    ipv6: bool = True  # the setup's `ipv6=on|off`: False when the VM has IPv6 disabled and the tunnel is IPv4-only
    direct_links: tuple[DirectLink, ...] = ()  # links the VM shares with the host, opened for the direct path


class VmKeeper:
    """Sets the VM side up while Docker is connected, and again each time it goes stale; removes it on stop."""

    def __init__(
        self,
        device: Device,
        tunnel: Tunnel,
        udp: UdpEndpoint,
        config: Callable[[], Config],
        events: EventBroadcaster,
        *,
        peer_subnets: VmPeerSubnets | None = None,
        standby_on_foreign: bool = False,
        direct_hosts: Callable[[], tuple[Address, ...]] | None = None,
    ) -> None:
        """`peer_subnets` gives the VM peer its allowed IPs (its tunnel addresses and the routed subnets);
        `standby_on_foreign` (a service) waits out a foreign VM interface instead of raising ForeignInterfaceError;
        `direct_hosts` gives the host addresses each setup looks for shared links with (the direct path)."""
        self._direct_hosts = direct_hosts
        self._standby_on_foreign = standby_on_foreign
        self._standby = StandbyReport(events, VM_STANDBY_RECHECK_S)
        self._device = device
        self._peer_subnets = VmPeerSubnets(device) if peer_subnets is None else peer_subnets
        self._tunnel = tunnel
        self._udp = udp
        self._config = config  # the current configuration: SIGHUP may replace it
        self._events = events
        self._health = VmHealth()
        self._side: VmSide | None = None
        self._side_set = trio.Event()
        self._stale = trio.Event()
        self._docker_activity = trio.Event()
        self._reconfigure = False
        self._shims: tuple[Shim, ...] = ()

    @property
    def side(self) -> VmSide | None:
        """The VM side, None before the first setup."""
        return self._side

    @property
    def standby(self) -> str | None:
        """Why the VM side waits (a foreign VM interface, as a service), None otherwise."""
        return self._standby.reason

    async def wait_side_set(self) -> None:
        """Until the next setup of the VM side completes: its IPv6 state, endpoint and links may be new."""
        await self._side_set.wait()

    @property
    def carries_ipv6(self) -> VmIpv6:
        """Whether the VM side carries IPv6, as its setup reported; UNKNOWN before the first setup."""
        if self._side is None:
            return VmIpv6.UNKNOWN
        return VmIpv6.ON if self._side.ipv6 else VmIpv6.OFF

    def set_up_again(self) -> None:
        """The VM side's parameters changed (SIGHUP: --allow-inbound): run the setup again as soon as Docker is
        connected, even if the VM side is healthy or quiet."""
        self._reconfigure = True
        self._stale.set()
        self._docker_activity.set()

    @property
    def shims(self) -> tuple[Shim, ...]:
        """The macvlan/ipvlan shims the next setup declares."""
        return self._shims

    def set_shims(self, shims: tuple[Shim, ...]) -> None:
        """Docker's macvlan/ipvlan networks changed: when that changes the shims, set the VM side up again (every
        setup recreates exactly the declared set)."""
        if shims == self._shims:
            return
        self._shims = shims
        if self._side is not None:
            self.set_up_again()

    def container_started(self) -> None:
        """Docker is in use (so its VM is awake): a VM side that stayed silent may be set up again now."""
        self._docker_activity.set()

    async def watch_health(self) -> None:
        while True:
            await trio.sleep(HEALTH_INTERVAL_S)
            self.check_health(trio.current_time())

    def check_health(self, now: float) -> Verdict:
        if self._side is None:
            return Verdict.NOT_SET_UP
        check = self._health.check(now, self._side.peer, self._config().vm_stale_after)
        for event in check.events:
            if event.kind is None:
                logger.log(event.level, "%s", event.message)
            else:
                announce(self._events, event.kind, event.message, event.level)
        if check.verdict.needs_setup:
            self._stale.set()
        return check.verdict

    async def keep(self, docker: DockerClient) -> None:
        """Set the VM side up now unless it is known healthy, and again each time it goes stale."""
        runner = VmSetupRunner(docker, setup_image=self._config().setup_image, on_progress=_log_progress)
        retry = Backoff(SETUP_RETRY_INITIAL_S, SETUP_RETRY_MAX_S)
        quiet = Backoff(QUIET_VM_RETRY_INITIAL_S, QUIET_VM_RETRY_MAX_S)
        while True:
            if self._stale.is_set() and self._health.silent_since_setup and not self._reconfigure:
                # The last setup brought no handshake: the VM is asleep (Resource Saver) or broken. Setting it up
                # again at once would only wake a sleeping VM for nothing; wait for a container to start (someone
                # uses Docker again) or, failing that, a growing while.
                delay = quiet.next_delay()
                logger.info("the VM side stayed silent after setup; next try on a container start or in %.0f s", delay)
                self._docker_activity = trio.Event()
                with trio.move_on_after(delay):
                    await self._docker_activity.wait()
            else:
                quiet.reset()
            if self._side is None or self._stale.is_set():
                try:
                    result = await runner.setup(self._setup_params())
                except ForeignInterfaceError as error:
                    if not self._standby_on_foreign:
                        raise
                    self._standby.enter(str(error))
                    await trio.sleep(VM_STANDBY_RECHECK_S)
                    continue
                except (DockerError, VmSetupError) as error:
                    failure = f"VM setup failed: {printable(str(error))}"
                    announce(self._events, "vm.setup_failed", failure, logging.ERROR)
                    await trio.sleep(retry.next_delay())
                    continue
                retry.reset()
                self._standby.leave("the VM interface is free again: dmnc takes over")
                self._reconfigure = False
                self._install(result, trio.current_time())
            await self._stale.wait()

    async def tear_down(self, docker: DockerClient) -> None:
        """On stop, with the connection still open: remove chip0, its rules and the fallback container."""
        config = self._config()
        if config.keep_vm_config or self._side is None:
            return
        try:
            await VmSetupRunner(docker, setup_image=config.setup_image).teardown(self._setup_params())
        except (DockerError, VmSetupError) as error:
            logger.warning("VM side not removed (%s); the next dmnc start replaces it", printable(str(error)))
        else:
            logger.info("VM side removed")

    def _setup_params(self) -> SetupParams:
        endpoint = self._config().endpoint
        return SetupParams(
            host_public_key=self._device.public_key,
            port=self._udp.port if endpoint is None or endpoint.port is None else endpoint.port,
            endpoint=None if endpoint is None else endpoint.host,
            allow_inbound=self._config().inbound_allow,
            shims=self._shims,
            direct_hosts=() if self._direct_hosts is None else self._direct_hosts(),
        )

    def _install(self, result: SetupResult, now: float) -> None:
        peer = None if self._side is None else self._side.peer
        if self._side is not None and self._side.public_key != result.vm_public_key:
            self._device.remove_peer(self._side.public_key)
            self._peer_subnets.attach(None)
            peer = None
        if peer is None:
            # The VM dials from one stable place (loopback on Docker Desktop, a vmnet/bridge address on Colima):
            # its endpoint may not roam into another address family or off loopback (dmnc.wireguard.roaming).
            allowed_ips = self._peer_subnets.allowed_ips()
            peer = self._device.add_peer(
                PeerConfig(public_key=result.vm_public_key, allowed_ips=allowed_ips, roam_anywhere=False)
            )
            self._peer_subnets.attach(result.vm_public_key)
            self._health.peer_added(peer)
            if self._tunnel.answer_recent_initiation():
                logger.debug("answered the VM's first initiation, which arrived before its key")
        self._side = VmSide(
            peer, result.vm_public_key, result.mode.value, result.endpoint_name, result.ipv6, result.direct_links
        )
        self._health.set_up(now)
        self._side_set.set()
        self._side_set = trio.Event()
        self._stale = trio.Event()
        self._report_failed_shims(result.shims_failed)
        if result.docker_nftables is DockerNftables.UNMARKED:
            announce(
                self._events,
                "vm.docker_nftables_unmarked",
                f"{unmarked_problem()}; {unmarked_fix(DEFAULT_INTERFACE)}",
                logging.WARNING,
            )
        ipv4_only = "" if result.ipv6 else "; IPv4 only: the VM has IPv6 disabled"
        announce(
            self._events,
            "vm.ready",
            f"VM side ready ({result.mode.value} WireGuard, kernel {printable(result.kernel_release)}),"
            f" dialing {printable(result.endpoint_name)}{ipv4_only}",
        )

    def _report_failed_shims(self, links: tuple[str, ...]) -> None:
        """Say which macvlan/ipvlan networks stay out of reach because the VM could not make their shim."""
        by_link = {shim.link: shim for shim in self._shims}
        for link in links:
            shim = by_link.get(link)
            where = f"network {printable(shim.network)} (parent {printable(shim.parent)})" if shim else link
            announce(
                self._events,
                "vm.shim_failed",
                f"no shim in the VM for {where}: its containers stay out of reach (the parent interface is missing"
                " or down, no candidate address was free, or its route clashes with one of the VM's)",
                logging.WARNING,
            )


def _log_progress(message: str) -> None:
    # Build and pull output is the daemon's (and the image's) text.
    logger.info("setup: %s", printable(message))
