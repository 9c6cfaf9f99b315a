"""`dmnc doctor`: checks every link of the chain host -> tunnel -> VM -> containers, each with a concrete fix.

The verdict functions (`root_check`, `runtime_check`, `port_check`, ...) are pure: facts in, one `CheckResult` out,
so the wording users see is unit-tested with fakes. `run_doctor` gathers the facts (Docker, the control socket of a
running dmnc, the UDP port, the routing table, a throwaway setup container) and reports each result as soon as it is
known. Every step has a time limit, and everything doctor creates (a test network, a probe container, the setup
container) is removed again, also when a step fails or times out.

Nothing is changed in the VM without root: like dmnc itself, doctor starts containers there only under sudo.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import ipaddress
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import trio

from dmnc.config import DEFAULT_LISTEN_HOST, Config
from dmnc.control import ControlError, ControlNotRunning, fetch_snapshot
from dmnc.control.messages import StatusSnapshot
from dmnc.docker.client import ContainerSpec, DockerClient
from dmnc.docker.discovery import Runtime, detect_runtime, discover_endpoint
from dmnc.docker.errors import DiscoveryError, DockerError, NotFound
from dmnc.docker.models import Network
from dmnc.routes import InstalledRoute, InterfaceNotFoundError, RouteError, open_route_manager
from dmnc.routes.policy import NetworkInfo, PolicyConfig, SkipReason, evaluate
from dmnc.tunnel.udp import DEFAULT_LISTEN_ADDRESSES, UdpEndpoint, UdpError
from dmnc.vm.errors import VmSetupError
from dmnc.vm.result import KernelWireGuardMissing, KernelWireGuardPresent
from dmnc.vm.runner import VmSetupRunner, default_setup_image

# Time limits per step: doctor must never hang. Discovery probes each candidate socket for up to 8 s
# (dmnc.docker.discovery.PROBE_TIMEOUT_S); missing sockets fail at once, so a dozen candidates cost little.
DOCKER_TIMEOUT_S = 30.0
CONTROL_TIMEOUT_S = 5.0
STEP_TIMEOUT_S = 15.0
# A one-shot container in a VM starts in about a second; a cold VM (Resource Saver) may need much longer.
VM_CHECK_TIMEOUT_S = 90.0
DEFAULT_PROBE_TIMEOUT_S = 30.0
PROBE_CONNECT_TIMEOUT_S = 1.0
CLEANUP_TIMEOUT_S = 15.0

# A session's keys are refused REJECT_AFTER_TIME after its handshake (whitepaper section 6.1, 180 s); a live tunnel
# rekeys every REKEY_AFTER_TIME (120 s) while it carries traffic, so an older handshake means the tunnel is dead.
REJECT_AFTER_TIME_S = 180.0

# The probe reaches the container on the TCP discard port (RFC 863): nothing listens there in a test container, so
# the container's kernel answers with a reset, which proves the path both ways without any server in the image.
PROBE_PORT = 9
PROBE_LABEL = "dev.dmnc.role"
PROBE_LABEL_VALUE = "doctor-probe"
# Small subnets for the probe network, in a corner of RFC 1918 space few setups use; the first one that overlaps
# neither a Docker network nor a host route is taken.
PROBE_SUBNETS = tuple(ipaddress.IPv4Network(f"172.30.253.{16 * index}/28") for index in range(16))
# Docker's default IPAM gives a new network's gateway the first address and its first container the second.
PROBE_CONTAINER_OFFSET = 2

ROOT_ONLY_CHECKS = ("vm-wireguard", "probe")
# Where podman machine keeps its VMs' API sockets (~/.local/share/containers/podman/machine/...); a Podman socket
# anywhere else on Linux is the native service (/run/podman/podman.sock, /run/user/<uid>/podman/podman.sock).
PODMAN_MACHINE_PATH = "/podman/machine/"
_PORT_TEXT = re.compile(r"[0-9]{1,5}")


class Verdict(enum.Enum):
    PASS = "PASS"  # noqa: S105 (a verdict, not a password)
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One line of the report: what was checked, the verdict, what was found, and what to do about it."""

    name: str
    verdict: Verdict
    detail: str
    fix: str | None = None

    def to_json_object(self) -> dict[str, str | None]:
        return {"name": self.name, "verdict": self.verdict.value, "detail": self.detail, "fix": self.fix}

    def render(self) -> str:
        """The lines `dmnc doctor` prints. Details quote the daemon (network names, errors): control characters
        are escaped so they cannot drive the terminal or fake a line."""
        line = f"{self.verdict.value} {self.name}: {_printable(self.detail)}"
        return line if self.fix is None else f"{line}\n  fix: {_printable(self.fix)}"


def _printable(text: str) -> str:
    return "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)


@dataclasses.dataclass(frozen=True)
class DoctorSettings:
    config: Config
    is_root: bool
    probe_image: str | None = None
    # From the probe network's creation to the container's answer (dmnc installs the route within that time).
    probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S
    platform: str = sys.platform


# ---------------------------------------------------------------------------------------------------------------------
# Verdicts (pure)


def root_check(is_root: bool) -> CheckResult:
    if is_root:
        return CheckResult("root", Verdict.PASS, "running as root")
    return CheckResult(
        "root",
        Verdict.WARN,
        f"not root: skipping {', '.join(ROOT_ONLY_CHECKS)} (they start containers in the VM, as dmnc does);"
        " dmnc itself must run as root",
        fix="sudo dmnc doctor",
    )


def docker_unreachable_check(error: DiscoveryError) -> CheckResult:
    tried = "; ".join(attempt.describe() for attempt in error.attempts) or "nothing to try"
    fix = "start Docker (Docker Desktop, Colima, ...), or name its socket: dmnc doctor --docker-host unix:///PATH"
    if any("permission denied" in attempt.outcome.lower() for attempt in error.attempts):
        fix = "sudo dmnc doctor (dmnc runs as root), or join the group that owns the Docker socket"
    return CheckResult("docker", Verdict.FAIL, f"no Docker daemon answered; tried {tried}", fix=fix)


def docker_error_check(error: DockerError) -> CheckResult:
    return CheckResult(
        "docker",
        Verdict.FAIL,
        f"the Docker daemon failed: {error}",
        fix="restart Docker, then run dmnc doctor again",
    )


def runtime_check(runtime: Runtime, platform: str, host: str, api_version: str) -> CheckResult:
    """Which engine is behind the socket, and whether dmnc has anything to do for it."""
    where = f"{runtime.value} at {host} (API {api_version})"
    if runtime is Runtime.ORBSTACK:
        return CheckResult(
            "runtime",
            Verdict.WARN,
            f"{where}: OrbStack routes container IPs to the host itself, dmnc is not needed",
            fix="use OrbStack's own container networking and stop dmnc (sudo dmnc service uninstall)",
        )
    if runtime is Runtime.DOCKER_ENGINE and platform == "linux":
        return CheckResult(
            "runtime",
            Verdict.WARN,
            f"{where}: the engine runs natively on this Linux host, so its containers are already routable from"
            " the host: dmnc is not needed",
            fix="nothing to do: reach containers by IP directly (dmnc is for engines inside a VM)",
        )
    if runtime is Runtime.PODMAN and platform == "linux" and PODMAN_MACHINE_PATH not in host:
        return CheckResult(
            "runtime",
            Verdict.WARN,
            f"{where}: Podman runs natively on this Linux host (not in a podman machine), so rootful containers are"
            " already routable from the host: dmnc is not needed",
            fix="nothing to do: reach rootful containers by IP directly (dmnc is for engines inside a VM)",
        )
    return CheckResult("runtime", Verdict.PASS, f"{where}: containers run in a VM, dmnc is what routes to them")


def _listen_port(snapshot: StatusSnapshot | None) -> int | None:
    if snapshot is None or snapshot.tunnel.listen is None:
        return None
    _, _, port_text = snapshot.tunnel.listen.rpartition(":")
    # ASCII digits only: str.isdigit() also accepts characters int() refuses (superscripts).
    return int(port_text) if _PORT_TEXT.fullmatch(port_text) else None


def port_check(
    port: int,
    explicit: bool,
    bind_error: UdpError | None,
    snapshot: StatusSnapshot | None,
    platform: str = sys.platform,
) -> CheckResult:
    """Whether dmnc can listen on its UDP port, given what binding it just now said and what a running dmnc uses."""
    running_port = _listen_port(snapshot)
    if bind_error is None:
        if running_port is not None:
            return CheckResult(
                "port", Verdict.PASS, f"UDP port {port} is free; the running dmnc listens on {running_port}"
            )
        return CheckResult("port", Verdict.PASS, f"UDP port {port} is free")
    cause = bind_error.__cause__
    in_use = isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE
    if in_use and running_port == port:
        return CheckResult("port", Verdict.PASS, f"UDP port {port} is held by the running dmnc")
    find = f"sudo lsof -nP -iUDP:{port}" if platform == "darwin" else f"ss -ulpn 'sport = :{port}'"
    if not in_use:
        return CheckResult(
            "port", Verdict.FAIL, f"cannot listen on UDP port {port}: {bind_error}", fix="choose --listen ADDR:PORT"
        )
    if explicit:
        return CheckResult(
            "port",
            Verdict.FAIL,
            f"UDP port {port} is taken by another program; dmnc will not start on it",
            fix=f"find it with `{find}` and stop it, or choose another port with --listen ADDR:PORT",
        )
    instead = f"; the running dmnc listens on {running_port} instead" if running_port is not None else ""
    return CheckResult(
        "port",
        Verdict.WARN,
        f"UDP port {port} is taken by another program: dmnc falls back to a free port{instead}",
        fix=f"find it with `{find}` if port {port} is wanted",
    )


def setup_image_check(image: str, present: bool, explicit: bool) -> CheckResult:
    if present:
        return CheckResult("setup-image", Verdict.PASS, f"{image} is in the VM")
    if explicit:
        return CheckResult(
            "setup-image",
            Verdict.WARN,
            f"{image} is not in the VM: dmnc pulls it at start",
            fix=f"if the VM cannot reach that registry: docker pull {image} (or docker load it) beforehand",
        )
    return CheckResult(
        "setup-image",
        Verdict.WARN,
        f"{image} is not built yet: dmnc builds it at start from its recipe (the VM downloads Alpine packages)",
        fix="if the VM is offline or behind a proxy: pass --setup-image REF with ip, wg, wireguard-go and iptables",
    )


def kernel_check(outcome: KernelWireGuardPresent | KernelWireGuardMissing) -> CheckResult:
    if isinstance(outcome, KernelWireGuardPresent):
        return CheckResult(
            "vm-wireguard", Verdict.PASS, f"the VM kernel {outcome.kernel_release} has WireGuard (chip0 runs in it)"
        )
    return CheckResult(
        "vm-wireguard",
        Verdict.WARN,
        f"the VM kernel {outcome.kernel_release} has no WireGuard: dmnc runs chip0 in a wireguard-go container"
        " instead (works, costs CPU in the VM)",
        fix="for the faster kernel path, use a VM kernel with CONFIG_WIREGUARD (update Docker Desktop/Colima)",
    )


def _format_drops(drops: Mapping[str, int]) -> str:
    shown = [f"{reason} {count}" for reason, count in sorted(drops.items()) if count]
    return ", ".join(shown) if shown else "none"


def handshake_check(snapshot: StatusSnapshot | None, not_running: str) -> CheckResult:
    """The running dmnc's tunnel to the VM, from its status: last handshake age and dropped packets."""
    if snapshot is None:
        return CheckResult("handshake", Verdict.SKIP, not_running)
    tunnel = snapshot.tunnel
    drops = _format_drops(tunnel.drops)
    docker_note = "" if snapshot.docker.connected else "; dmnc is not connected to Docker right now"
    age = tunnel.last_handshake_age_s
    if age is None:
        return CheckResult(
            "handshake",
            Verdict.FAIL,
            f"dmnc runs, but the VM has not completed a handshake (VM setup: {snapshot.vm.mode or 'not done'};"
            f" dropped packets: {drops}){docker_note}",
            fix=f"read dmnc's log for VM setup errors; the VM must reach this host on UDP {tunnel.listen or 'port'}"
            " (firewall?), or name the address it should dial with --endpoint HOST",
        )
    if age > REJECT_AFTER_TIME_S:
        return CheckResult(
            "handshake",
            Verdict.FAIL,
            f"last handshake {age:.0f} s ago: the session expired, the VM side is gone or cannot reach this host"
            f" (dropped packets: {drops}){docker_note}",
            fix="dmnc sets the VM side up again on its own within a minute; if not, restart dmnc and read its log",
        )
    return CheckResult(
        "handshake",
        Verdict.PASS,
        f"last handshake {age:.0f} s ago from {tunnel.endpoint or 'the VM'} ({snapshot.vm.mode or '?'} WireGuard);"
        f" dropped packets: {drops}{docker_note}",
    )


def route_conflict_check(
    networks: Sequence[NetworkInfo], policy: PolicyConfig, routes: Iterable[InstalledRoute]
) -> CheckResult:
    """Docker subnets that overlap host routes dmnc does not own (VPN, LAN), naming both."""
    installed = list(routes)
    ours = {route.destination for route in installed if route.ours}
    result = evaluate(networks, policy, other_routes=installed, already_routed=ours)
    blocked = [finding for finding in result.overlaps if not finding.routed]
    forced = [finding for finding in result.overlaps if finding.routed]
    if blocked:
        return CheckResult(
            "route-conflicts",
            Verdict.FAIL,
            "; ".join(finding.describe() for finding in blocked + forced),
            fix="give the Docker network a subnet that overlaps nothing (docker network create --subnet ..., or the"
            " daemon's default-address-pools), exclude it with --route-exclude, or take it over with --force-routes",
        )
    if forced:
        return CheckResult(
            "route-conflicts",
            Verdict.WARN,
            "; ".join(finding.describe() for finding in forced),
            fix="the other route (VPN? LAN?) loses those addresses while dmnc routes them: change the Docker subnet",
        )
    return CheckResult(
        "route-conflicts",
        Verdict.PASS,
        f"{len(result.desired)} subnet(s) to route, none overlaps another route of this host",
    )


# Routes dmnc leaves out on purpose (policy, overlaps: see route-conflicts) carry these reasons in its status.
_DELIBERATE_SKIPS = frozenset(reason.value for reason in SkipReason)
# A route dmnc wants but has not added yet: normal for a second after a network appears.
_NOT_YET = "not installed yet"


def installed_routes_check(snapshot: StatusSnapshot | None, not_running: str) -> CheckResult:
    """The running dmnc's routes: every container subnet it wants is installed, or why not."""
    if snapshot is None:
        return CheckResult("routes", Verdict.SKIP, not_running)
    wanted = [route for route in snapshot.routes if route.installed or route.reason not in _DELIBERATE_SKIPS]
    missing = [route for route in wanted if not route.installed]
    interface = snapshot.tunnel.interface or "the tunnel"
    if not missing:
        return CheckResult("routes", Verdict.PASS, f"{len(wanted)} container subnet(s) routed through {interface}")
    described = "; ".join(f"{route.subnet} ({route.network}): {route.reason or 'not installed'}" for route in missing)
    if all(route.reason == _NOT_YET for route in missing):
        return CheckResult(
            "routes",
            Verdict.WARN,
            f"{len(wanted) - len(missing)} of {len(wanted)} routed, still adding {described}",
            fix="run dmnc doctor again in a few seconds",
        )
    return CheckResult(
        "routes",
        Verdict.FAIL,
        f"{len(wanted) - len(missing)} of {len(wanted)} routed through {interface}; not routed: {described}",
        fix="read dmnc's log; a route 'taken by another program' was replaced by another route to the same subnet"
        " (VPN client?): stop that program or change the Docker network's subnet",
    )


def choose_probe_subnet(
    taken: Collection[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> ipaddress.IPv4Network | None:
    """The first PROBE_SUBNETS entry that overlaps nothing in `taken` (Docker subnets and non-default routes)."""
    for candidate in PROBE_SUBNETS:
        if not any(other.version == 4 and candidate.overlaps(other) for other in taken if other.prefixlen > 0):
            return candidate
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Gathering the facts


Report = Callable[[CheckResult], None]


@dataclasses.dataclass
class _Facts:
    """What earlier checks learned that later ones build on."""

    snapshot: StatusSnapshot | None = None
    not_running: str = "dmnc is not running"
    image_present: bool = False
    networks: list[Network] | None = None
    routes: list[InstalledRoute] | None = None


async def run_doctor(settings: DoctorSettings, report: Report) -> list[CheckResult]:
    """Run every check in order, handing each result to `report` as soon as it is known; return them all."""
    results: list[CheckResult] = []

    def add(result: CheckResult) -> None:
        results.append(result)
        report(result)

    add(root_check(settings.is_root))
    config = settings.config
    facts = _Facts()
    try:
        with trio.fail_after(DOCKER_TIMEOUT_S):
            endpoint = await discover_endpoint(None if config.docker_host is None else config.docker_host.url)
    except DiscoveryError as error:
        add(docker_unreachable_check(error))
        await _checks_without_docker(settings, facts, add)
        return results
    except trio.TooSlowError:
        add(_timeout("docker", DOCKER_TIMEOUT_S))
        await _checks_without_docker(settings, facts, add)
        return results
    connected = False
    try:
        # request_timeout bounds every request doctor makes, so no step waits on the daemon for longer.
        async with DockerClient.connect(endpoint.address, request_timeout=STEP_TIMEOUT_S) as docker:
            version, info = await docker.version(), await docker.info()
            connected = True
            add(
                CheckResult(
                    "docker",
                    Verdict.PASS,
                    f"{endpoint.source}: {docker.address.url} answers (engine {version.version or '?'})",
                )
            )
            add(
                runtime_check(
                    detect_runtime(version, info, docker.address),
                    settings.platform,
                    docker.address.url,
                    docker.api_version,
                )
            )
            await _checks_with_docker(settings, docker, facts, add)
    except DockerError as error:
        # Every check catches the errors of its own requests; this is the daemon failing while connecting.
        add(docker_error_check(error))
        if not connected:
            await _checks_without_docker(settings, facts, add)
    return results


def _timeout(name: str, seconds: float) -> CheckResult:
    return CheckResult(
        name,
        Verdict.FAIL,
        f"no answer within {seconds:g} s",
        fix="run dmnc doctor again; if it persists, restart Docker",
    )


def _skip(name: str, reason: str) -> CheckResult:
    return CheckResult(name, Verdict.SKIP, reason)


async def _checks_without_docker(settings: DoctorSettings, facts: _Facts, add: Report) -> None:
    add(_skip("runtime", "needs Docker"))
    await _read_status(settings, facts)
    add(_port(settings, facts))
    for name in ("setup-image", "vm-wireguard"):
        add(_skip(name, "needs Docker"))
    add(handshake_check(facts.snapshot, facts.not_running))
    add(_skip("route-conflicts", "needs Docker (its network list)"))
    add(installed_routes_check(facts.snapshot, facts.not_running))
    add(_skip("probe", "needs Docker"))


async def _checks_with_docker(settings: DoctorSettings, docker: DockerClient, facts: _Facts, add: Report) -> None:
    await _read_status(settings, facts)
    add(_port(settings, facts))
    add(await _setup_image(settings, docker, facts))
    add(await _vm_wireguard(settings, docker, facts))
    add(handshake_check(facts.snapshot, facts.not_running))
    add(await _route_conflicts(settings, docker, facts))
    add(installed_routes_check(facts.snapshot, facts.not_running))
    add(await _probe(settings, docker, facts))


async def _read_status(settings: DoctorSettings, facts: _Facts) -> None:
    path = settings.config.control_socket
    try:
        facts.snapshot = await fetch_snapshot(path, timeout_s=CONTROL_TIMEOUT_S)
    except ControlNotRunning:
        facts.not_running = f"dmnc is not running (no service on {path}); start it: sudo dmnc"
    except ControlError as error:
        facts.not_running = f"cannot read the running dmnc's status: {error}"


def _port(settings: DoctorSettings, facts: _Facts) -> CheckResult:
    listen = settings.config.listen
    addresses = DEFAULT_LISTEN_ADDRESSES if listen.host == DEFAULT_LISTEN_HOST else (str(listen.host),)
    bind_error: UdpError | None = None
    try:
        UdpEndpoint.open(listen.port, addresses).close()
    except UdpError as error:
        bind_error = error
    return port_check(listen.port, listen.port_explicit, bind_error, facts.snapshot, settings.platform)


async def _setup_image(settings: DoctorSettings, docker: DockerClient, facts: _Facts) -> CheckResult:
    explicit = settings.config.setup_image
    image = explicit if explicit is not None else default_setup_image()
    try:
        await docker.inspect_image(image)
    except NotFound:
        return setup_image_check(image, present=False, explicit=explicit is not None)
    except DockerError as error:
        return CheckResult("setup-image", Verdict.FAIL, f"cannot look up {image}: {error}")
    facts.image_present = True
    return setup_image_check(image, present=True, explicit=explicit is not None)


async def _vm_wireguard(settings: DoctorSettings, docker: DockerClient, facts: _Facts) -> CheckResult:
    if not settings.is_root:
        return _skip("vm-wireguard", "needs root (it starts a setup container in the VM)")
    if not facts.image_present:
        return _skip("vm-wireguard", "needs the setup image (see setup-image)")
    runner = VmSetupRunner(docker, setup_image=settings.config.setup_image, run_timeout=VM_CHECK_TIMEOUT_S)
    try:
        outcome = await runner.check_kernel()
    except (VmSetupError, DockerError) as error:
        return CheckResult(
            "vm-wireguard",
            Verdict.FAIL,
            f"the setup container could not test the VM kernel: {error}",
            fix="the engine must allow --net=host containers with NET_ADMIN (rootless engines do not), and a"
            " --setup-image needs /bin/sh, ip and wg",
        )
    return kernel_check(outcome)


async def _route_conflicts(settings: DoctorSettings, docker: DockerClient, facts: _Facts) -> CheckResult:
    try:
        facts.networks = await docker.list_networks()
    except DockerError as error:
        return CheckResult("route-conflicts", Verdict.FAIL, f"cannot list Docker networks: {error}")
    # The manager marks routes through this interface as dmnc's own; without a running dmnc nothing is ours, and
    # any interface that surely exists (loopback) will do.
    loopback = "lo0" if settings.platform == "darwin" else "lo"
    tunnel = facts.snapshot.tunnel.interface if facts.snapshot is not None else None
    try:
        with trio.fail_after(STEP_TIMEOUT_S):
            facts.routes = await _list_routes(tunnel or loopback, loopback)
    except trio.TooSlowError:
        return _timeout("route-conflicts", STEP_TIMEOUT_S)
    except RouteError as error:
        return CheckResult("route-conflicts", Verdict.FAIL, f"cannot read this host's routing table: {error}")
    networks = [NetworkInfo.of(network) for network in facts.networks]
    return route_conflict_check(networks, settings.config.routes, facts.routes)


async def _list_routes(interface: str, fallback_interface: str) -> list[InstalledRoute]:
    """Every route of this host; through `fallback_interface` when `interface` is gone (dmnc stopping meanwhile)."""
    try:
        async with open_route_manager(interface) as manager:
            return await manager.list_routes()
    except InterfaceNotFoundError:
        if interface == fallback_interface:
            raise
    async with open_route_manager(fallback_interface) as manager:
        return await manager.list_routes()


def _probe_inputs(
    settings: DoctorSettings, facts: _Facts
) -> tuple[str, list[Network], list[InstalledRoute]] | CheckResult:
    """The probe image, the Docker networks and the host routes; or the SKIP result saying what is missing."""
    if settings.probe_image is None:
        return _skip(
            "probe",
            "pass --probe IMAGE (a small image with `sleep`, e.g. busybox) to reach a test container from this host",
        )
    if not settings.is_root:
        return _skip("probe", "needs root (it creates a network and a container in the VM)")
    if facts.snapshot is None:
        return _skip("probe", "needs a running dmnc (see handshake)")
    if facts.networks is None or facts.routes is None:
        return _skip("probe", "needs the network and route lists (see route-conflicts)")
    return settings.probe_image, facts.networks, facts.routes


async def _probe(settings: DoctorSettings, docker: DockerClient, facts: _Facts) -> CheckResult:
    inputs = _probe_inputs(settings, facts)
    if isinstance(inputs, CheckResult):
        return inputs
    image, networks, routes = inputs
    taken = [subnet for network in networks for subnet in network.subnets]
    taken += [route.destination for route in routes]
    subnet = choose_probe_subnet(taken)
    if subnet is None:
        return CheckResult("probe", Verdict.FAIL, "every probe subnet (172.30.253.0/24) is in use on this host")
    resources = _ProbeResources(f"dmnc-doctor-{secrets.token_hex(3)}")
    probe_network = NetworkInfo(
        name=resources.network, id="", driver="bridge", scope="local", internal=False, labels={}, subnets=(subnet,)
    )
    if subnet not in evaluate([probe_network], settings.config.routes).desired:
        return _skip("probe", f"dmnc's route selection (--route-include/--route-exclude) would not route {subnet}")
    try:
        result = await _run_probe(docker, image, resources, subnet, settings.probe_timeout_s)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT_S) as cleanup:
            await _remove_probe(docker, resources)
        if cleanup.cancelled_caught:
            resources.leftovers.append(f"{resources.network} (Docker did not answer within {CLEANUP_TIMEOUT_S:g} s)")
    if resources.leftovers:
        return CheckResult(
            "probe",
            Verdict.FAIL,
            f"{result.detail}; could not remove {', '.join(resources.leftovers)}",
            fix=f"docker rm -f {resources.network}; docker network rm {resources.network}",
        )
    return result


@dataclasses.dataclass
class _ProbeResources:
    """What the probe created in the VM, so cleanup removes exactly that; `leftovers` are what it could not."""

    network: str
    network_created: bool = False
    container_id: str | None = None
    leftovers: list[str] = dataclasses.field(default_factory=list)


async def _run_probe(
    docker: DockerClient, image: str, resources: _ProbeResources, subnet: ipaddress.IPv4Network, timeout_s: float
) -> CheckResult:
    address = subnet.network_address + PROBE_CONTAINER_OFFSET
    # Timed from the network's creation: that includes dmnc noticing the network and installing its route.
    started = time.monotonic()
    with trio.move_on_after(timeout_s):
        try:
            labels = {PROBE_LABEL: PROBE_LABEL_VALUE}
            await docker.create_network(resources.network, subnets=[str(subnet)], labels=labels)
            resources.network_created = True
            spec = ContainerSpec(image=image, command=["sleep", "120"], network_mode=resources.network, labels=labels)
            resources.container_id = (await docker.create_container(spec, name=resources.network)).id
            await docker.start_container(resources.container_id)
        except DockerError as error:
            return CheckResult(
                "probe",
                Verdict.FAIL,
                f"cannot start a probe container from {image} on a test network: {error}",
                fix="pass --probe with an image present in the VM that has `sleep` (docker image ls)",
            )
        while True:
            if await _answers(address, PROBE_PORT):
                break
            await trio.sleep(0.2)
        return CheckResult(
            "probe",
            Verdict.PASS,
            f"reached a container at {address} on the new network {resources.network} ({subnet}) from this host,"
            f" {time.monotonic() - started:.1f} s after creating the network",
        )
    if resources.container_id is None:
        return CheckResult("probe", Verdict.FAIL, f"the probe container did not start within {timeout_s:g} s")
    return CheckResult(
        "probe",
        Verdict.FAIL,
        f"the container at {address} on the new network {resources.network} ({subnet}) did not answer from this"
        f" host within {time.monotonic() - started:.0f} s of creating the network",
        fix="run `dmnc status`: is the route of the new network installed, and the last handshake recent?",
    )


async def _answers(address: ipaddress.IPv4Address, port: int) -> bool:
    """Whether a TCP connection attempt gets any answer: accepted or reset both prove the path both ways."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with trio.move_on_after(PROBE_CONNECT_TIMEOUT_S):
            await sock.connect((str(address), port))
            return True
    except ConnectionRefusedError:
        return True
    except OSError:
        # No route yet (dmnc adds it about a second after the network appears) or unreachable: the caller retries.
        return False
    finally:
        sock.close()
    return False


async def _remove_probe(docker: DockerClient, resources: _ProbeResources) -> None:
    if resources.container_id is not None:
        try:
            await docker.remove_container(resources.container_id, force=True)
        except NotFound:
            pass
        except DockerError as error:
            resources.leftovers.append(f"container {resources.network} ({error})")
    if resources.network_created:
        try:
            await docker.remove_network(resources.network)
        except NotFound:
            pass
        except DockerError as error:
            resources.leftovers.append(f"network {resources.network} ({error})")
