"""The dmnc service: every part in one trio nursery, healing itself.

```
Service.run
├── tunnel        TUN <-> UDP data path, handshakes, timers (dmnc.tunnel.datapath)
├── routes        RouteReconciler: desired subnets (from Docker) vs installed routes (dmnc.routes)
├── control       status snapshot + live events on a Unix socket (dmnc.control)
├── health        watches the VM peer's counters: handshakes, and a VM side gone silent
└── docker        discover + connect + watch network events; lost -> backoff, reconnect, resync
    └── vm-keeper run the setup container at start and whenever the VM side has gone stale
```

Losing Docker cancels only the docker subtree: the tunnel and the installed routes keep working, so containers
stay reachable while the daemon restarts. The VM side is declared stale from our own counters (no authenticated
packet for longer than the VM's persistent keepalive plus a rekey timeout), never by polling the daemon, so a VM
that Docker Desktop's Resource Saver put to sleep is not kept awake by dmnc.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import math
import os
import random
import signal
import sys
from collections.abc import Callable

import trio

from dmnc import __version__
from dmnc.config import (
    DEFAULT_LISTEN_HOST,
    Config,
    ConfigError,
    ConfigFlags,
    ListenAddress,
    format_host_port,
    load_config,
)
from dmnc.control import (
    BoundControlSocket,
    ControlError,
    ControlSocketBusy,
    EventBroadcaster,
    bind_control_socket,
    serve_control_socket,
)
from dmnc.control.messages import DockerStatus, RouteStatus, StatusSnapshot, TunnelStatus, VmStatus
from dmnc.docker.client import DockerClient
from dmnc.docker.discovery import Runtime, detect_runtime, discover_endpoint
from dmnc.docker.errors import DiscoveryError, DockerError
from dmnc.docker.models import Event, Network
from dmnc.errors import first_of
from dmnc.logsetup import setup_logging
from dmnc.routes import RouteError, open_route_manager
from dmnc.routes.policy import NetworkInfo
from dmnc.routes.reconcile import RouteReconciler
from dmnc.tun import DEFAULT_MTU, TunAddress, TunDevice, TunError, open_tun
from dmnc.tunnel.datapath import Tunnel
from dmnc.tunnel.udp import DEFAULT_LISTEN_ADDRESSES, UdpEndpoint, UdpError
from dmnc.vm.errors import VmSetupError
from dmnc.vm.params import (
    DEFAULT_HOST_ADDRESS,
    DEFAULT_HOST_ADDRESS6,
    DEFAULT_VM_ADDRESS,
    DEFAULT_VM_ADDRESS6,
    SetupParams,
)
from dmnc.vm.result import SetupResult
from dmnc.vm.runner import VmSetupRunner
from dmnc.wireguard import Device, PeerConfig, PeerStats, encode_key, generate_private_key

logger = logging.getLogger("dmnc.supervisor")  # one log component for the whole service package

EXIT_OK = 0
EXIT_FAILURE = 1

# The VM side keeps the tunnel alive with a persistent keepalive of 25 s (dmnc/vm/setup.sh). Silence for longer
# than that plus one REKEY_TIMEOUT (5 s, whitepaper 6.1) and a margin means the VM lost its end: VM restarted,
# chip0 deleted, fallback container gone.
VM_KEEPALIVE_S = 25.0
VM_STALE_AFTER_S = VM_KEEPALIVE_S + 5.0 + 10.0
# After a setup the VM's first handshake normally arrives within a second; this long without one, set up again.
FIRST_HANDSHAKE_GRACE_S = 20.0
HEALTH_INTERVAL_S = 1.0

# Reconnecting to Docker: fast at first (a daemon restart takes ~1 s), capped so a stopped Docker Desktop costs
# almost nothing, jittered so several clients do not hammer a starting daemon in step.
RECONNECT_INITIAL_S = 0.25
RECONNECT_MAX_S = 5.0
# Podman's event stream has no network events: its networks are listed this often instead. Only for Podman, whose
# machine VM does not sleep the way Docker Desktop's Resource Saver does.
NETWORK_POLL_INTERVAL_S = 5.0
# A VM that stays silent right after a setup is asleep or broken: further setups wait for a container start, or
# this long (doubling) at most, so dmnc does not keep a Resource Saver VM awake.
QUIET_VM_RETRY_INITIAL_S = 60.0
QUIET_VM_RETRY_MAX_S = 900.0
# A failing VM setup (image build offline, a broken VM) is retried more patiently.
SETUP_RETRY_INITIAL_S = 2.0
SETUP_RETRY_MAX_S = 60.0
# Cleanup on SIGTERM must end well within launchd's/systemd's default stop timeouts and the 5 s we promise.
SHUTDOWN_BUDGET_S = 4.0

# The host end of the tunnel routes only Docker subnets into the TUN; the VM peer is the only peer, so it owns
# every destination (cryptokey routing) and may send from any container subnet.
VM_PEER_ALLOWED_IPS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
HOST_TUN_ADDRESSES = (
    TunAddress(ipaddress.ip_interface(f"{DEFAULT_HOST_ADDRESS}/32"), DEFAULT_VM_ADDRESS),
    TunAddress(ipaddress.ip_interface(f"{DEFAULT_HOST_ADDRESS6}/128"), DEFAULT_VM_ADDRESS6),
)
LINUX_TUN_NAME = "dmnc%d"

# Test hook (not a user option): shortens VM_STALE_AFTER_S so lab tests can see recovery in seconds.
STALE_AFTER_ENV = "DMNC_TEST_VM_STALE_AFTER"


class ServiceError(Exception):
    """The service cannot start or run; the message says what to do."""


class Backoff:
    """Exponential backoff with full jitter in [delay/2, delay]; `reset` after a success."""

    def __init__(self, initial: float, maximum: float, rng: Callable[[], float] = random.random) -> None:
        self._initial = initial
        self._maximum = maximum
        self._rng = rng
        self._delay = initial

    def reset(self) -> None:
        self._delay = self._initial

    def next_delay(self) -> float:
        delay = self._delay
        self._delay = min(self._maximum, self._delay * 2)
        return delay / 2 + self._rng() * delay / 2


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


@dataclasses.dataclass
class _DockerState:
    host: str | None = None
    runtime: str | None = None
    api_version: str | None = None
    connected: bool = False


@dataclasses.dataclass
class _VmState:
    mode: str | None = None
    public_key: bytes | None = None
    endpoint: str | None = None
    set_up_at: float | None = None
    stale: trio.Event = dataclasses.field(default_factory=trio.Event)


class Service:
    """One running dmnc: owns the tunnel, the routes, the Docker watcher and the control socket."""

    def __init__(self, config: Config, flags: ConfigFlags) -> None:
        self.config = config
        self._flags = flags
        self._events = EventBroadcaster()
        self._docker = _DockerState()
        self._vm = _VmState()
        self._private_key = generate_private_key(os.urandom)
        self._device: Device | None = None
        self._tunnel: Tunnel | None = None
        self._tun: TunDevice | None = None
        self._udp: UdpEndpoint | None = None
        self._reconciler: RouteReconciler | None = None
        self._vm_peer: PeerStats | None = None
        self._last_rx_packets = 0
        self._last_rx_at: float | None = None
        self._handshakes_seen = 0
        self._stale_after = _stale_after_from_env()
        self._docker_activity = trio.Event()
        self._stopping = False
        self._scope = trio.CancelScope()

    # --- StatusSource (dmnc.control) --------------------------------------------------------------------------

    @property
    def events(self) -> EventBroadcaster:
        return self._events

    def snapshot(self) -> StatusSnapshot:
        now = trio.current_time()
        peer = self._vm_peer
        drops: dict[str, int] = {}
        if self._device is not None:
            for reason, count in self._device.drops.items():
                drops[reason.name.lower()] = drops.get(reason.name.lower(), 0) + count
        if peer is not None:
            for reason, count in peer.drops.items():
                drops[reason.name.lower()] = drops.get(reason.name.lower(), 0) + count
        if self._tunnel is not None:
            for name, count in dataclasses.asdict(self._tunnel.counters).items():
                if count:
                    drops[name] = count
        tunnel = TunnelStatus(
            interface=self._tun.name if self._tun is not None else None,
            listen=None if self._udp is None else str(ListenAddress(self.config.listen.host, self._udp.port, True)),
            last_handshake_age_s=(
                None if peer is None or peer.last_handshake is None else max(0.0, now - peer.last_handshake)
            ),
            endpoint=None if peer is None or peer.endpoint is None else format_host_port(*peer.endpoint),
            rx_bytes=0 if peer is None else peer.rx_bytes,
            tx_bytes=0 if peer is None else peer.tx_bytes,
            drops=drops,
        )
        routes: tuple[RouteStatus, ...] = ()
        if self._reconciler is not None:
            routes = tuple(
                RouteStatus(
                    subnet=subnet.subnet, network=subnet.network, installed=subnet.installed, reason=subnet.reason
                )
                for subnet in self._reconciler.status().subnets
            )
        return StatusSnapshot(
            version=__version__,
            tunnel=tunnel,
            docker=DockerStatus(
                host=self._docker.host,
                runtime=self._docker.runtime,
                api_version=self._docker.api_version,
                connected=self._docker.connected,
            ),
            vm=VmStatus(
                mode=self._vm.mode,
                public_key=None if self._vm.public_key is None else encode_key(self._vm.public_key),
            ),
            routes=routes,
        )

    def _emit(self, kind: str, message: str, level: int = logging.INFO) -> None:
        logger.log(level, "%s", message)
        self._events.emit(kind, message)

    # --- lifetime ---------------------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Begin an orderly shutdown: routes removed, and the VM side too unless keep_vm_config."""
        self._stopping = True
        self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until `stop()` (or cancelled); on the way out remove the routes and, after `stop()`, the VM side."""
        with self._scope:
            await self._run(task_status)

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        # Claimed first: it doubles as the single-instance check, before anything touches the network.
        try:
            control = await bind_control_socket(self.config.control_socket)
        except ControlSocketBusy as error:
            raise ServiceError(f"another dmnc is already running ({error})") from error
        except ControlError as error:
            raise ServiceError(str(error)) from error
        try:
            await self._run_with(control, task_status)
        finally:
            with trio.CancelScope(shield=True):
                await control.aclose()

    async def _run_with(self, control: BoundControlSocket, task_status: trio.TaskStatus[None]) -> None:
        try:
            self._tun = open_tun(
                LINUX_TUN_NAME if sys.platform == "linux" else None, mtu=DEFAULT_MTU, addresses=HOST_TUN_ADDRESSES
            )
        except TunError as error:
            raise ServiceError(f"cannot create the tunnel interface: {error}") from error
        try:
            self._udp = open_udp(self.config)
            self._device = Device(self._private_key, rng=os.urandom, wall_offset=Tunnel.wall_offset(), mtu=DEFAULT_MTU)
            self._tunnel = Tunnel(self._device, self._tun, self._udp)
            logger.info(
                "tunnel interface %s up, UDP port %d, public key %s",
                self._tun.name,
                self._udp.port,
                encode_key(self._device.public_key),
            )
            async with open_route_manager(self._tun.name) as manager:
                self._reconciler = RouteReconciler(manager, self.config.routes)
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(self._tunnel.run)
                        await nursery.start(self._reconciler.run)
                        await nursery.start(serve_control_socket, control, self)
                        nursery.start_soon(self._health)
                        nursery.start_soon(self._docker_loop)
                        task_status.started()
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_BUDGET_S):
                        await self._clean_up()
        finally:
            if self._udp is not None:
                self._udp.close()
            self._tun.close()

    async def _clean_up(self) -> None:
        if self._reconciler is not None:
            try:
                await self._reconciler.withdraw()
                logger.info("routes removed")
            except RouteError as error:
                logger.warning("could not remove every route: %s (they go away with %s)", error, self._tun_name())

    def _routes(self) -> RouteReconciler:
        if self._reconciler is None:
            raise ServiceError("routes are not managed before the tunnel exists")
        return self._reconciler

    def _tun_name(self) -> str:
        return self._tun.name if self._tun is not None else "the tunnel interface"

    def _docker_host(self) -> str | None:
        return None if self.config.docker_host is None else self.config.docker_host.url

    def _setup_params(self) -> SetupParams:
        if self._device is None or self._udp is None:
            raise ServiceError("the VM side cannot be set up before the tunnel exists")
        endpoint = self.config.endpoint
        return SetupParams(
            host_public_key=self._device.public_key,
            port=self._udp.port if endpoint is None or endpoint.port is None else endpoint.port,
            endpoint=None if endpoint is None else endpoint.host,
        )

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; log level and route selection apply at once, the rest at restart."""
        try:
            new = load_config(self._flags, os.environ)
        except ConfigError as error:
            logger.error("configuration not reloaded: %s", error)  # noqa: TRY400 (a bad file, not a bug)
            return
        setup_logging(new.log_level)
        if self._reconciler is not None:
            self._reconciler.set_policy(new.routes)
        restart_needed = [
            name
            for name in ("docker_host", "listen", "endpoint", "setup_image", "control_socket")
            if getattr(new, name) != getattr(self.config, name)
        ]
        self.config = new
        self._emit("config.reloaded", "configuration reloaded")
        if restart_needed:
            logger.warning("changes to %s take effect when dmnc restarts", ", ".join(restart_needed))

    # --- VM peer health ---------------------------------------------------------------------------------------

    async def _health(self) -> None:
        while True:
            await trio.sleep(HEALTH_INTERVAL_S)
            self.check_vm_health(trio.current_time())

    def check_vm_health(self, now: float) -> None:
        """Note handshakes and traffic of the VM peer; flag the VM side stale after too long a silence."""
        peer = self._vm_peer
        if peer is None:
            return
        if peer.handshakes != self._handshakes_seen:
            if self._handshakes_seen == 0:
                self._emit("tunnel.up", f"tunnel up: the VM handshook from {_peer_endpoint_text(peer)}")
            else:
                logger.debug("handshake with the VM (%d so far)", peer.handshakes)
            self._handshakes_seen = peer.handshakes
        if peer.rx_packets != self._last_rx_packets:
            self._last_rx_packets = peer.rx_packets
            self._last_rx_at = now
        set_up_at = self._vm.set_up_at
        if self._vm.stale.is_set() or set_up_at is None:
            return
        if self._last_rx_at is None or self._last_rx_at < set_up_at:
            silent_for, limit = now - set_up_at, FIRST_HANDSHAKE_GRACE_S
        else:
            silent_for, limit = now - self._last_rx_at, self._stale_after
        if silent_for > limit:
            self._emit(
                "vm.stale",
                f"nothing heard from the VM side for {silent_for:.0f} s: setting it up again",
                logging.WARNING,
            )
            self._vm.stale.set()

    # --- Docker -----------------------------------------------------------------------------------------------

    async def _docker_loop(self) -> None:
        backoff = Backoff(RECONNECT_INITIAL_S, RECONNECT_MAX_S)
        last_problem: str | None = None
        while True:
            try:
                endpoint = await discover_endpoint(self._docker_host())
                async with DockerClient.connect(endpoint.address) as docker:
                    await self._watch_docker(docker, backoff)
                problem = "the Docker event stream ended"
            except Exception as error:  # a nursery below may wrap the Docker error in an exception group
                found = docker_problem(error)
                if found is None:
                    raise
                problem = found
            if self._docker.connected:
                self._docker.connected = False
                self._emit("docker.disconnected", f"{problem}; reconnecting (routes stay)", logging.WARNING)
            elif problem != last_problem:
                logger.warning("%s; retrying", problem)
            last_problem = problem
            await trio.sleep(backoff.next_delay())

    async def _watch_docker(self, docker: DockerClient, backoff: Backoff) -> None:
        version, info = await docker.version(), await docker.info()
        runtime = detect_runtime(version, info, docker.address)
        self._docker = _DockerState(
            host=docker.address.url, runtime=runtime.value, api_version=docker.api_version, connected=True
        )
        async with docker.events({"type": ["network", "container"]}) as events:
            # The stream is open before the list is read, so nothing created in between is missed.
            self._routes().set_networks(NetworkInfo.of(network) for network in await docker.list_networks())
            self._emit(
                "docker.connected",
                f"connected to {runtime.value} at {docker.address.url} (API {docker.api_version})",
            )
            backoff.reset()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._keep_vm_side, docker)
                    if runtime is Runtime.PODMAN:
                        nursery.start_soon(self._poll_networks, docker)
                    async for event in events:
                        await self._on_event(docker, event)
                    nursery.cancel_scope.cancel()
            finally:
                if self._stopping:
                    with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_BUDGET_S) as budget:
                        await self._tear_down_vm_side(docker)
                    if budget.cancelled_caught:
                        logger.warning("VM side not removed in time; the next dmnc start replaces it")

    async def _tear_down_vm_side(self, docker: DockerClient) -> None:
        """On stop, with the connection still open: remove chip0, its rules and the fallback container."""
        if self.config.keep_vm_config or self._vm.public_key is None:
            return
        try:
            await VmSetupRunner(docker, setup_image=self.config.setup_image).teardown(self._setup_params())
        except (DockerError, VmSetupError) as error:
            logger.warning("VM side not removed (%s); the next dmnc start replaces it", error)
        else:
            logger.info("VM side removed")

    async def _poll_networks(self, docker: DockerClient) -> None:
        """For engines whose event stream carries no network events (Podman 4 sends none): list them instead."""
        known: list[NetworkInfo] | None = None
        while True:
            await trio.sleep(NETWORK_POLL_INTERVAL_S)
            listed = await docker.list_networks()
            networks = sorted((NetworkInfo.of(network) for network in listed), key=lambda info: info.id)
            if known is not None and networks != known:
                self._routes().set_networks(networks)
            known = networks

    async def _on_event(self, docker: DockerClient, event: Event) -> None:
        if event.type == "container":
            if event.action == "start":
                self._docker_activity.set()
            return
        if event.action == "create":
            try:
                network = await docker.inspect_network(event.actor_id)
            except DockerError as error:
                logger.warning("network %s created but not readable: %s", event.actor_id[:12], error)
                return
            self._routes().update_network(NetworkInfo.of(network))
            self._emit("network.created", f"network {network.name} created: {_subnets(network)}")
        elif event.action == "destroy":
            self._routes().remove_network(event.actor_id)
            name = event.actor_attributes.get("name", event.actor_id[:12])
            self._emit("network.removed", f"network {name} removed")

    async def _keep_vm_side(self, docker: DockerClient) -> None:
        """Set the VM side up now unless it is known healthy, and again each time it goes stale."""
        runner = VmSetupRunner(docker, setup_image=self.config.setup_image, on_progress=_log_progress)
        retry = Backoff(SETUP_RETRY_INITIAL_S, SETUP_RETRY_MAX_S)
        quiet = Backoff(QUIET_VM_RETRY_INITIAL_S, QUIET_VM_RETRY_MAX_S)
        while True:
            if self._vm.stale.is_set() and self._silent_since_setup():
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
            if self._vm_needs_setup():
                try:
                    result = await runner.setup(self._setup_params())
                except (DockerError, VmSetupError) as error:
                    self._emit("vm.setup_failed", f"VM setup failed: {error}", logging.ERROR)
                    await trio.sleep(retry.next_delay())
                    continue
                retry.reset()
                self._install_vm_peer(result)
            await self._vm.stale.wait()

    def _silent_since_setup(self) -> bool:
        return self._vm.set_up_at is not None and (self._last_rx_at is None or self._last_rx_at < self._vm.set_up_at)

    def _vm_needs_setup(self) -> bool:
        return self._vm_peer is None or self._vm.stale.is_set()

    def _install_vm_peer(self, result: SetupResult) -> None:
        if self._device is None:
            raise ServiceError("the VM peer cannot be added before the tunnel exists")
        if self._vm.public_key is not None and self._vm.public_key != result.vm_public_key:
            self._device.remove_peer(self._vm.public_key)
            self._vm_peer = None
        if self._vm_peer is None:
            self._vm_peer = self._device.add_peer(
                PeerConfig(public_key=result.vm_public_key, allowed_ips=VM_PEER_ALLOWED_IPS)
            )
            self._handshakes_seen = self._vm_peer.handshakes
            self._last_rx_packets = self._vm_peer.rx_packets
            if self._tunnel is not None and self._tunnel.answer_recent_initiation():
                logger.debug("answered the VM's first initiation, which arrived before its key")
        self._vm = _VmState(
            mode=result.mode.value,
            public_key=result.vm_public_key,
            endpoint=result.endpoint_name,
            set_up_at=trio.current_time(),
        )
        self._emit(
            "vm.ready",
            f"VM side ready ({result.mode.value} WireGuard, kernel {result.kernel_release}),"
            f" dialing {result.endpoint_name}",
        )


def docker_problem(error: BaseException) -> str | None:
    """A readable line for a lost or unreachable Docker inside `error` (possibly an exception group); None if
    `error` is not about Docker (a bug, which must not be retried away)."""
    found = first_of(error, (DockerError, VmSetupError))
    if found is None:
        return None
    return f"Docker is not reachable: {found}" if isinstance(found, DiscoveryError) else f"lost Docker: {found}"


def _stale_after_from_env() -> float:
    text = os.environ.get(STALE_AFTER_ENV)
    if text is None:
        return VM_STALE_AFTER_S
    try:
        value = float(text)
    except ValueError:
        return VM_STALE_AFTER_S
    return value if math.isfinite(value) and value > 0 else VM_STALE_AFTER_S


def _peer_endpoint_text(peer: PeerStats) -> str:
    return "an unknown endpoint" if peer.endpoint is None else format_host_port(*peer.endpoint)


def _subnets(network: Network) -> str:
    return ", ".join(str(subnet) for subnet in network.subnets) or "no subnets"


def _log_progress(message: str) -> None:
    logger.info("setup: %s", message)


async def _serve(service: Service) -> None:
    """Run `service` until the first SIGINT/SIGTERM; SIGHUP reloads; a second stop signal exits at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(_run_then_cancel, service, nursery.cancel_scope)
            logger.info("dmnc %s running; Ctrl-C or SIGTERM stops it", __version__)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    service.reload()
                elif service.stopping:
                    logger.warning("second %s: exiting now", signal.Signals(signum).name)
                    os._exit(EXIT_FAILURE)
                else:
                    logger.info("%s received: shutting down", signal.Signals(signum).name)
                    service.stop()


async def _run_then_cancel(
    service: Service, when_done: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run `service`; once it has shut down, end the signal loop too."""
    await service.run(task_status=task_status)
    when_done.cancel()


# Errors that end the service with one line for the user (everything else is a bug and keeps its traceback).
_FATAL_ERRORS = (ServiceError, TunError, UdpError, RouteError, ControlError, ConfigError)


def _fatal_error(error: BaseException) -> BaseException | None:
    """The first user-facing error inside `error`."""
    return first_of(error, _FATAL_ERRORS)


def run(config: Config, flags: ConfigFlags) -> int:
    """Run the service in the foreground until a stop signal. Returns the process exit code."""
    try:
        trio.run(_serve, Service(config, flags))
    except BaseException as error:
        fatal = _fatal_error(error)
        if fatal is None:
            raise
        print(f"dmnc: {fatal}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
