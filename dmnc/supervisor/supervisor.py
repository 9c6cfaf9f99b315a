"""The dmnc service: every part in one trio nursery, healing itself.

```
Supervisor.run
├── control socket  claimed first: the single-instance check; status snapshots + live events (dmnc.control)
├── tunnel          TUN <-> UDP data path, handshakes, timers (dmnc.tunnel.datapath)
├── routes          RouteReconciler: desired subnets (from Docker) vs installed routes (dmnc.routes)
├── dns             container names on the tunnel addresses, port 53; points the host's resolver at it (dmnc.dns)
├── vm health       the VM peer's counters: first handshake, a VM side gone silent (vm_keeper.VmHealth)
├── paths           per address family: tunnel, or direct via the VM's address on a shared link (path_keeper)
└── docker          discover + connect + watch network events; lost -> backoff, reconnect, resync (docker_watch)
    ├── vm keeper   set the VM side up at start and whenever it has gone stale (vm_keeper)
    └── dns names   list the running containers into the name table on every resync and container event
```

Before any part exists, the conflicts of dmnc.supervisor.conflicts are checked (another program holding the tunnel
address, docker-mac-net-connect's launchd service). In the foreground dmnc refuses with one line; as a service it
waits in **standby**: the control socket answers and `dmnc status` says why, the check repeats every
STANDBY_RECHECK_S, and the tunnel starts once the conflict is gone. A control socket held by another dmnc (two dmnc
services installed) is waited out the same way. A foreign VM interface is found later, by the VM setup: the VM
keeper's guard does the same there (dmnc.supervisor.vm_keeper).

The parts (TUN, UDP socket, WireGuard device, data path, route manager) are built before the nursery starts, in
that order, and handed to the tasks that use them. A stop signal withdraws the routes and, unless keep_vm_config,
removes the VM side; SIGHUP re-reads the configuration.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import sys

import trio

from dmnc import __version__
from dmnc.config import DEFAULT_LISTEN_HOST, Config, ConfigError, ConfigFlags, load_config
from dmnc.control import (
    BoundControlSocket,
    ControlError,
    ControlSocketBusy,
    EventBroadcaster,
    StatusSource,
    bind_control_socket,
    serve_control_socket,
)
from dmnc.control.messages import StatusSnapshot
from dmnc.dns.domain import domain_warning, parse_domain
from dmnc.dns.host import open_host_resolver
from dmnc.dns.names import Reachability
from dmnc.dns.service import DnsService
from dmnc.errors import first_of
from dmnc.logsetup import setup_logging
from dmnc.routes import RouteError, host_address_source, open_route_manager
from dmnc.routes.policy import HostState, Skipped, VmIpv6
from dmnc.routes.reconcile import RouteReconciler
from dmnc.supervisor.conflicts import (
    STANDBY_RECHECK_S,
    StandbyReport,
    both_dmnc_daemons,
    find_conflicts,
    running_as_service,
)
from dmnc.supervisor.docker_watch import DockerWatch
from dmnc.supervisor.host_watch import read_host_dns_servers, watch_host_state
from dmnc.supervisor.log import announce, logger
from dmnc.supervisor.parts import SHUTDOWN_BUDGET_S, RunningParts
from dmnc.supervisor.path_keeper import PathKeeper
from dmnc.supervisor.peer_subnets import VmPeerSubnets
from dmnc.supervisor.snapshot import ServiceStatus
from dmnc.supervisor.vm_keeper import VmKeeper, stale_after_warning
from dmnc.tun import TunAddress, TunDevice, TunError, open_tun
from dmnc.tunnel.datapath import Tunnel
from dmnc.tunnel.flowfilter import FlowFilter
from dmnc.tunnel.udp import DEFAULT_LISTEN_ADDRESSES, UdpEndpoint, UdpError
from dmnc.vm.errors import ForeignInterfaceError
from dmnc.vm.params import DEFAULT_HOST_ADDRESS, DEFAULT_HOST_ADDRESS6, DEFAULT_VM_ADDRESS, DEFAULT_VM_ADDRESS6
from dmnc.wireguard import Device, encode_key, generate_private_key
from dmnc.wireguard.constants import DEFAULT_MTU

EXIT_OK = 0
EXIT_FAILURE = 1

HOST_TUN_ADDRESSES = (
    TunAddress(ipaddress.ip_interface(f"{DEFAULT_HOST_ADDRESS}/32"), DEFAULT_VM_ADDRESS),
    TunAddress(ipaddress.ip_interface(f"{DEFAULT_HOST_ADDRESS6}/128"), DEFAULT_VM_ADDRESS6),
)
# The tunnel's own addresses, both ends: no container route may capture them.
TUNNEL_NETWORKS = tuple(
    ipaddress.ip_network(address)
    for tun_address in HOST_TUN_ADDRESSES
    for address in (tun_address.local.ip, tun_address.peer)
    if address is not None
)
# The host's own tunnel addresses: another interface holding one is another program's tunnel.
TUNNEL_HOST_ADDRESSES = tuple(tun_address.local.ip for tun_address in HOST_TUN_ADDRESSES)
LINUX_TUN_NAME = "dmnc%d"
# Options SIGHUP cannot change in a running service (log_level, vm_stale_after and the route options it can).
RESTART_OPTIONS = ("docker_host", "listen", "endpoint", "setup_image", "control_socket", "dns_domain", "dns_enabled")


class ServiceError(Exception):
    """The service cannot start or run; the message says what to do."""


def open_udp(config: Config) -> UdpEndpoint:
    """Bind the tunnel's UDP port; the default port falls back to a free one when taken (an explicit one may not)."""
    addresses = DEFAULT_LISTEN_ADDRESSES if config.listen.host == DEFAULT_LISTEN_HOST else (str(config.listen.host),)
    try:
        return UdpEndpoint.open(config.listen.port, addresses)
    except UdpError as error:
        cause = error.__cause__
        in_use = isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE
        if not in_use:
            raise ServiceError(f"cannot open the tunnel's UDP port: {error}") from error
        if config.listen.port_explicit:
            raise ServiceError(
                f"UDP port {config.listen.port} is already in use (another dmnc?). Stop that program, or choose"
                " another port with --listen ADDR:PORT"
            ) from error
    udp = UdpEndpoint.open(0, addresses)
    logger.warning("UDP port %d is in use; listening on %d instead", config.listen.port, udp.port)
    return udp


def open_tun_device() -> TunDevice:
    try:
        return open_tun(
            LINUX_TUN_NAME if sys.platform == "linux" else None, mtu=DEFAULT_MTU, addresses=HOST_TUN_ADDRESSES
        )
    except TunError as error:
        raise ServiceError(f"cannot create the tunnel interface: {error}") from error


class Standby(StandbyReport):
    """The service's standby before its parts start: also the StatusSource that says why, and the first wait
    reports the service started to its caller (so signals work from then on)."""

    def __init__(self, events: EventBroadcaster, task_status: trio.TaskStatus[None]) -> None:
        super().__init__(events, STANDBY_RECHECK_S)
        self._task_status: trio.TaskStatus[None] | None = task_status

    @property
    def events(self) -> EventBroadcaster:
        return self._events

    def snapshot(self) -> StatusSnapshot:
        return StatusSnapshot(version=__version__, standby=self.reason)

    def task_status(self) -> trio.TaskStatus[None]:
        """The caller's task status while it has not been told the service started; a no-op one after."""
        return self._task_status if self._task_status is not None else trio.TASK_STATUS_IGNORED

    def enter(self, reason: str) -> None:
        super().enter(reason)
        if self._task_status is not None:
            self._task_status.started()
            self._task_status = None


class Supervisor:
    """One running dmnc: owns the tunnel, the routes, the Docker watcher and the control socket."""

    def __init__(self, config: Config, flags: ConfigFlags, *, as_service: bool = False) -> None:
        """`as_service`: started by launchd or systemd, so conflicts mean standby, not exit."""
        self.config = config
        self._flags = flags
        self.as_service = as_service
        self._events = EventBroadcaster()
        self._private_key = generate_private_key(os.urandom)
        # Set while the parts exist; only SIGHUP's reload reaches into them from outside the nursery.
        self._routes: RouteReconciler | None = None
        self._tunnel: Tunnel | None = None
        self._vm: VmKeeper | None = None
        self._paths: PathKeeper | None = None
        self._stopping = False
        self._scope = trio.CancelScope()

    @property
    def events(self) -> EventBroadcaster:
        return self._events

    @property
    def stopping(self) -> bool:
        return self._stopping

    def current_config(self) -> Config:
        """The configuration as of the last (re)load; the parts read it through this, so SIGHUP reaches them."""
        return self.config

    def stop(self) -> None:
        """Begin an orderly shutdown: routes removed, and the VM side too unless keep_vm_config."""
        self._stopping = True
        self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until `stop()` (or cancelled); on the way out remove the routes and, after `stop()`, the VM side."""
        with self._scope:
            standby = Standby(self._events, task_status)
            if sys.platform == "darwin" and await trio.to_thread.run_sync(both_dmnc_daemons):
                logger.warning("both dmnc launchd services are installed: remove one (`dmnc doctor` says which)")
            while True:
                control = await self._claim_control_socket(standby)
                conflicts = await trio.to_thread.run_sync(find_conflicts, TUNNEL_HOST_ADDRESSES)
                if not conflicts:
                    break
                reason = "; ".join(conflict.describe() for conflict in conflicts)
                if not self.as_service:
                    await control.aclose()
                    raise ServiceError(reason)
                await self._wait_in_standby(control, standby, reason)
            standby.leave("the conflict is gone: dmnc takes over")
            try:
                await self._run_with(control, standby.task_status())
            finally:
                with trio.CancelScope(shield=True):
                    await control.aclose()

    async def _claim_control_socket(self, standby: Standby) -> BoundControlSocket:
        """Claimed first: it doubles as the single-instance check, before anything touches the network. A service
        whose socket another dmnc holds (both dmnc services installed) waits for it in standby."""
        while True:
            try:
                return await bind_control_socket(self.config.control_socket)
            except ControlSocketBusy as error:
                if not self.as_service:
                    raise ServiceError(str(error)) from error  # it says "another dmnc is already running: ..."
                standby.enter(f"{error}: only one dmnc service should be installed")
            except ControlError as error:
                raise ServiceError(str(error)) from error
            await trio.sleep(STANDBY_RECHECK_S)

    async def _wait_in_standby(self, control: BoundControlSocket, standby: Standby, reason: str) -> None:
        """Answer status (saying why) until the conflicts are gone; the control socket is closed on return."""
        standby.enter(reason)
        status: StatusSource = standby
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control_socket, control, status)
            while True:
                await trio.sleep(STANDBY_RECHECK_S)
                conflicts = await trio.to_thread.run_sync(find_conflicts, TUNNEL_HOST_ADDRESSES)
                if not conflicts:
                    nursery.cancel_scope.cancel()
                    return
                standby.enter("; ".join(conflict.describe() for conflict in conflicts))

    async def _run_with(self, control: BoundControlSocket, task_status: trio.TaskStatus[None]) -> None:
        if warning := stale_after_warning(self.config.vm_stale_after):
            logger.warning("%s", warning)
        tun = open_tun_device()
        try:
            udp = open_udp(self.config)
            try:
                device = Device(self._private_key, rng=os.urandom, wall_offset=Tunnel.wall_offset(), mtu=DEFAULT_MTU)
                tunnel = Tunnel(device, tun, udp, flow_filter=self._flow_filter())
                logger.info(
                    "tunnel interface %s up, UDP port %d, public key %s",
                    tun.name,
                    udp.port,
                    encode_key(device.public_key),
                )
                peer_subnets = VmPeerSubnets(device)
                async with open_route_manager(tun.name) as manager:
                    routes = RouteReconciler(
                        manager, self.config.routes, on_withdrawn=self._route_withdrawn, hooks=peer_subnets
                    )
                    # No IPv6 route until the VM setup says whether the VM has IPv6 (host_watch passes it on).
                    routes.set_host_state(HostState(tunnel=TUNNEL_NETWORKS, vm_ipv6=VmIpv6.UNKNOWN))
                    parts = RunningParts(tun, udp, device, tunnel, routes, peer_subnets)
                    await self._run_parts(parts, control, task_status)
            finally:
                udp.close()
        finally:
            tun.close()

    async def _run_parts(
        self, parts: RunningParts, control: BoundControlSocket, task_status: trio.TaskStatus[None]
    ) -> None:
        vm = VmKeeper(
            parts.device,
            parts.tunnel,
            parts.udp,
            self.current_config,
            self._events,
            peer_subnets=parts.peer_subnets,
            standby_on_foreign=self.as_service,
            direct_hosts=lambda: paths.direct_hosts(),  # noqa: PLW0108 (paths, made below, needs the keeper)
        )
        paths = PathKeeper(
            parts.routes,
            vm,
            host_address_source(parts.routes.manager),
            self.current_config,
            self._events,
            tunnel_interface=parts.tun.name,
            tunnel_networks=TUNNEL_NETWORKS,
        )
        names = open_dns_service(self.config, parts, vm)
        docker = DockerWatch(parts.routes, vm, self.current_config, self._events, lambda: self._stopping, names=names)
        status = ServiceStatus(parts, docker, vm, self.current_config, self._events, names=names, paths=paths)
        self._routes, self._tunnel, self._vm, self._paths = parts.routes, parts.tunnel, vm, paths
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(parts.tunnel.run)
                await nursery.start(parts.routes.run)
                # Before Docker: the first VM setup asks it for the host's addresses.
                await nursery.start(paths.run)
                await nursery.start(serve_control_socket, control, status)
                if names is not None:
                    await nursery.start(names.run)
                nursery.start_soon(vm.watch_health)
                nursery.start_soon(
                    watch_host_state,
                    parts.routes,
                    vm,
                    TUNNEL_NETWORKS,
                    read_host_dns_servers,
                    host_address_source(parts.routes.manager),
                )
                nursery.start_soon(docker.run)
                task_status.started()
        finally:
            self._routes = self._tunnel = self._vm = self._paths = None
            with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_BUDGET_S):
                await _withdraw_routes(parts)

    def _route_withdrawn(self, skip: Skipped) -> None:
        """A subnet dmnc routed is left out now (the reconciler logged why): say so on the event feed."""
        self._events.emit(
            "route.withdrawn",
            f"network {skip.network!r} subnet {skip.subnet}: route withdrawn: {skip.describe()}",
            network=skip.network,
            subnet=str(skip.subnet),
            decision=skip.reason.decision,
        )

    def _flow_filter(self) -> FlowFilter:
        """The one-way door: the VM's packets reach only the host's tunnel addresses, and only in host flows."""
        return FlowFilter(
            [address.local.ip.packed for address in HOST_TUN_ADDRESSES], allowed_inbound=self.config.inbound_allow
        )

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; log level, vm_stale_after, route selection, the inbound ports and
        the path apply at once, the rest at restart."""
        try:
            new = load_config(self._flags, os.environ)
        except ConfigError as error:
            logger.error("configuration not reloaded: %s", error)
            return
        setup_logging(new.log_level)
        if self._routes is not None:
            self._routes.set_policy(new.routes)
        if new.inbound_allow != self.config.inbound_allow:
            self._allow_inbound(new)
        if new.path != self.config.path and self._paths is not None:
            logger.info("path: %s", new.path.value)
            self._paths.wake()
        restart_needed = [name for name in RESTART_OPTIONS if getattr(new, name) != getattr(self.config, name)]
        stale_after_changed = new.vm_stale_after != self.config.vm_stale_after
        self.config = new
        announce(self._events, "config.reloaded", "configuration reloaded")
        if stale_after_changed and (warning := stale_after_warning(new.vm_stale_after)):
            logger.warning("%s", warning)
        if restart_needed:
            logger.warning("changes to %s take effect when dmnc restarts", ", ".join(restart_needed))

    def _allow_inbound(self, new: Config) -> None:
        """Apply a changed --allow-inbound: the host's filter at once, the VM's firewall with a new setup."""
        logger.info("inbound ports allowed: %s", ", ".join(map(str, new.inbound_allow)) or "none")
        if self._tunnel is not None and self._tunnel.flow_filter is not None:
            self._tunnel.flow_filter.set_allowed_inbound(new.inbound_allow)
        if self._vm is not None:
            self._vm.set_up_again()


def open_dns_service(config: Config, parts: RunningParts, vm: VmKeeper) -> DnsService | None:
    """The DNS server for container names on the tunnel's host addresses, or None with --no-dns."""
    if not config.dns_enabled:
        return None
    domain = parse_domain(config.dns_domain)
    if warning := domain_warning(domain):
        logger.warning("%s", warning)

    def reachability() -> Reachability:
        side = vm.side
        return Reachability(parts.routes.status().routed, ipv6=side is not None and side.ipv6)

    addresses = [str(address.local.ip) for address in HOST_TUN_ADDRESSES]
    return DnsService(domain, addresses, reachability, open_host_resolver(parts.tun.name))


async def _withdraw_routes(parts: RunningParts) -> None:
    try:
        await parts.routes.withdraw()
        logger.info("routes removed")
    except RouteError as error:
        logger.warning("could not remove every route: %s (they go away with %s)", error, parts.tun.name)


async def _serve(supervisor: Supervisor) -> None:
    """Run `supervisor` until the first SIGINT/SIGTERM; SIGHUP reloads; a second stop signal exits at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(_run_then_cancel, supervisor, nursery.cancel_scope)
            logger.info("dmnc %s running; Ctrl-C or SIGTERM stops it", __version__)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    supervisor.reload()
                elif supervisor.stopping:
                    logger.warning("second %s: exiting now", signal.Signals(signum).name)
                    os._exit(EXIT_FAILURE)
                else:
                    logger.info("%s received: shutting down", signal.Signals(signum).name)
                    supervisor.stop()


async def _run_then_cancel(
    supervisor: Supervisor,
    when_done: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `supervisor`; once it has shut down, end the signal loop too."""
    await supervisor.run(task_status=task_status)
    when_done.cancel()


# Errors that end the service with one line for the user (everything else is a bug and keeps its traceback).
_FATAL_ERRORS = (ServiceError, TunError, UdpError, RouteError, ControlError, ConfigError, ForeignInterfaceError)


def _fatal_error(error: BaseException) -> BaseException | None:
    """The first user-facing error inside `error`."""
    return first_of(error, _FATAL_ERRORS)


def run(config: Config, flags: ConfigFlags) -> int:
    """Run the service in the foreground until a stop signal. Returns the process exit code."""
    try:
        trio.run(_serve, Supervisor(config, flags, as_service=running_as_service(os.environ)))
    except BaseException as error:
        fatal = _fatal_error(error)
        if fatal is None:
            raise
        print(f"dmnc: {fatal}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
