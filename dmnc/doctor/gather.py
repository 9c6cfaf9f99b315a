"""`dmnc doctor`'s facts: what Docker, a running dmnc, the UDP port, the routing table and the system resolver say,
in check order.

`run_doctor` gathers each fact and hands it to its verdict in `dmnc.doctor.checks`, reporting every result as soon as
it is known. Every step has a time limit, so doctor never hangs; the probe (`dmnc.doctor.probe`) and the setup
container remove what they create, also when a step fails or times out.

Nothing is changed in the VM without root: like dmnc itself, doctor starts containers there only under sudo.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from dmnc.config import DEFAULT_LISTEN_HOST, Config
from dmnc.control import ControlError, ControlNotRunning, fetch_snapshot
from dmnc.control.messages import StatusSnapshot
from dmnc.dns.names import IPAddress
from dmnc.dns.resolver_files import leftover_resolver_files
from dmnc.dns.service import endpoints_of
from dmnc.docker.client import DockerClient
from dmnc.docker.discovery import detect_runtime, discover_endpoint
from dmnc.docker.errors import DiscoveryError, DockerError, NotFound
from dmnc.docker.models import Network
from dmnc.doctor.checks import (
    CheckResult,
    Verdict,
    coexistence_check,
    dns_resolve_check,
    dns_server_check,
    docker_answers_check,
    docker_error_check,
    docker_firewall_check,
    docker_unreachable_check,
    handshake_check,
    installed_routes_check,
    kernel_check,
    kernel_test_failed_check,
    leftover_resolver_check,
    path_check,
    port_check,
    resolve_target,
    root_check,
    route_conflict_check,
    route_facts_missing_check,
    runtime_check,
    setup_image_check,
    setup_image_unknown_check,
    skipped,
    split_host_port,
    timeout_check,
)
from dmnc.doctor.probe import DEFAULT_PROBE_TIMEOUT_S, probe_check
from dmnc.routes import (
    InstalledRoute,
    InterfaceNotFoundError,
    RouteError,
    RouteManager,
    host_address_source,
    open_route_manager,
)
from dmnc.routes.policy import HostNetwork, HostState
from dmnc.supervisor.conflicts import both_dmnc_daemons, interface_address_conflicts, launchd_conflicts
from dmnc.supervisor.host_watch import read_host_dns_servers
from dmnc.supervisor.supervisor import TUNNEL_HOST_ADDRESSES, TUNNEL_NETWORKS
from dmnc.tunnel.udp import DEFAULT_LISTEN_ADDRESSES, UdpEndpoint, UdpError
from dmnc.vm.errors import VmSetupError
from dmnc.vm.params import DEFAULT_INTERFACE
from dmnc.vm.result import ForeignInterface, KernelWireGuardMissing, KernelWireGuardPresent
from dmnc.vm.runner import VmSetupRunner, default_setup_image
from dmnc.vm.shims import route_info

# Time limits per step: doctor must never hang. Discovery probes each candidate socket for up to 8 s
# (dmnc.docker.discovery.PROBE_TIMEOUT_S); missing sockets fail at once, so a dozen candidates cost little.
DOCKER_TIMEOUT_S = 30.0
CONTROL_TIMEOUT_S = 5.0
STEP_TIMEOUT_S = 15.0
# A one-shot container in a VM starts in about a second; a cold VM (Resource Saver) may need much longer.
VM_CHECK_TIMEOUT_S = 90.0
# One getaddrinfo through the system resolver: glibc's default is 5 s per try and 2 tries per server
# (resolv.conf(5) `timeout`, `attempts`), so a resolver that never answers is reported after this long instead.
RESOLVE_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True)
class DoctorSettings:
    config: Config
    is_root: bool
    probe_image: str | None = None
    # From the probe network's creation to the container's answer (dmnc installs the route within that time).
    probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S
    platform: str = sys.platform
    # Where /etc/resolver is looked for: "/" but in tests.
    resolver_root: Path = Path("/")


Report = Callable[[CheckResult], None]


@dataclasses.dataclass
class _Facts:
    """What earlier checks learned that later ones build on."""

    snapshot: StatusSnapshot | None = None
    not_running: str = "dmnc is not running"
    image_present: bool = False
    networks: list[Network] | None = None
    routes: list[InstalledRoute] | None = None
    kernel_outcome: KernelWireGuardPresent | KernelWireGuardMissing | None = None
    firewall_driver: str = ""
    status_unreadable: str | None = None  # a control socket answered, but not with a status


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
        add(timeout_check("docker", DOCKER_TIMEOUT_S))
        await _checks_without_docker(settings, facts, add)
        return results
    connected = False
    try:
        # request_timeout bounds every request doctor makes, so no step waits on the daemon for longer.
        async with DockerClient.connect(endpoint.address, request_timeout=STEP_TIMEOUT_S) as docker:
            version, info = await docker.version(), await docker.info()
            connected = True
            add(docker_answers_check(endpoint.source, docker.address.url, version.version))
            add(
                runtime_check(
                    detect_runtime(version, info, docker.address),
                    settings.platform,
                    docker.address.url,
                    docker.api_version,
                )
            )
            facts.firewall_driver = info.firewall_backend
            await _checks_with_docker(settings, docker, facts, add)
    except DockerError as error:
        # Every check catches the errors of its own requests; this is the daemon failing while connecting.
        add(docker_error_check(error))
        if not connected:
            await _checks_without_docker(settings, facts, add)
    return results


async def _checks_without_docker(settings: DoctorSettings, facts: _Facts, add: Report) -> None:
    add(skipped("runtime", "needs Docker"))
    await _read_status(settings, facts)
    add(_port(settings, facts))
    for name in ("setup-image", "vm-wireguard", "docker-firewall"):
        add(skipped(name, "needs Docker"))
    add(handshake_check(facts.snapshot, facts.not_running, _local_address_toward_vm(facts.snapshot)))
    add(await _coexistence(settings, facts))
    add(skipped("route-conflicts", "needs Docker (its network list)"))
    add(installed_routes_check(facts.snapshot, facts.not_running))
    add(path_check(facts.snapshot, facts.not_running))
    add(dns_server_check(facts.snapshot, facts.not_running))
    add(skipped("dns-resolve", "needs Docker (a running container's name)"))
    add(_resolver_files(settings, facts))
    add(skipped("probe", "needs Docker"))


async def _checks_with_docker(settings: DoctorSettings, docker: DockerClient, facts: _Facts, add: Report) -> None:
    await _read_status(settings, facts)
    add(_port(settings, facts))
    add(await _setup_image(settings, docker, facts))
    add(await _vm_wireguard(settings, docker, facts))
    add(_docker_firewall(facts))
    add(handshake_check(facts.snapshot, facts.not_running, _local_address_toward_vm(facts.snapshot)))
    add(await _coexistence(settings, facts))
    add(await _route_conflicts(settings, docker, facts))
    add(installed_routes_check(facts.snapshot, facts.not_running))
    add(path_check(facts.snapshot, facts.not_running))
    add(dns_server_check(facts.snapshot, facts.not_running))
    add(await _dns_resolve(settings, docker, facts))
    add(_resolver_files(settings, facts))
    add(await _probe(settings, docker, facts))


async def _read_status(settings: DoctorSettings, facts: _Facts) -> None:
    path = settings.config.control_socket
    try:
        facts.snapshot = await fetch_snapshot(path, timeout_s=CONTROL_TIMEOUT_S)
    except ControlNotRunning:
        facts.not_running = f"dmnc is not running (no service on {path}); start it: sudo dmnc"
    except ControlError as error:
        facts.not_running = f"cannot read the running dmnc's status: {error}"
        facts.status_unreadable = facts.not_running


def _local_address_toward_vm(snapshot: StatusSnapshot | None) -> str | None:
    """The source address this host uses toward the VM's endpoint, from a connected UDP socket's own address:
    connect(2) on a datagram socket only chooses the route and sends nothing (udp(7))."""
    endpoint = None if snapshot is None or snapshot.tunnel.endpoint is None else snapshot.tunnel.endpoint
    parsed = None if endpoint is None else split_host_port(endpoint)
    if parsed is None:
        return None
    address, port_text = parsed
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((str(address), int(port_text)))
            local: str = probe.getsockname()[0]
    except OSError:
        return None
    return local


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
        return setup_image_unknown_check(image, error)
    facts.image_present = True
    return setup_image_check(image, present=True, explicit=explicit is not None)


async def _vm_wireguard(settings: DoctorSettings, docker: DockerClient, facts: _Facts) -> CheckResult:
    if not settings.is_root:
        return skipped("vm-wireguard", "needs root (it starts a setup container in the VM)")
    if not facts.image_present:
        return skipped("vm-wireguard", "needs the setup image (see setup-image)")
    runner = VmSetupRunner(docker, setup_image=settings.config.setup_image, run_timeout=VM_CHECK_TIMEOUT_S)
    try:
        outcome = await runner.check_kernel()
    except (VmSetupError, DockerError) as error:
        return kernel_test_failed_check(error)
    if not isinstance(outcome, ForeignInterface):  # another tool's chip0: the check saw nothing of Docker's firewall
        facts.kernel_outcome = outcome
    return kernel_check(outcome)


def _docker_firewall(facts: _Facts) -> CheckResult:
    return docker_firewall_check(facts.kernel_outcome, DEFAULT_INTERFACE, facts.firewall_driver)


async def _coexistence(settings: DoctorSettings, facts: _Facts) -> CheckResult:
    """Another program holding the tunnel addresses (by interface, dmnc's own TUN left out), docker-mac-net-connect's
    launchd service, both dmnc services (macOS), and the running dmnc's own standby reason."""
    loopback = _loopback(settings)
    tunnel = facts.snapshot.tunnel.interface if facts.snapshot is not None else None
    darwin = settings.platform == "darwin"
    try:
        with trio.fail_after(STEP_TIMEOUT_S):
            _, host_networks = await _list_routes(tunnel or loopback, loopback)
            conflicts = interface_address_conflicts(host_networks, TUNNEL_HOST_ADDRESSES)
            if darwin:
                conflicts += await trio.to_thread.run_sync(launchd_conflicts)
            both = darwin and await trio.to_thread.run_sync(both_dmnc_daemons)
    except trio.TooSlowError:
        return timeout_check("coexistence", STEP_TIMEOUT_S)
    except RouteError as error:
        return CheckResult("coexistence", Verdict.FAIL, f"cannot read this host's interface addresses: {error}")
    return coexistence_check(
        conflicts,
        both_dmnc_services=both,
        standby=None if facts.snapshot is None else facts.snapshot.standby,
        platform=settings.platform,
        own_tunnel_unknown=facts.status_unreadable,
    )


def _loopback(settings: DoctorSettings) -> str:
    """An interface that surely exists, for a route manager when no dmnc is running: nothing is then dmnc's."""
    return "lo0" if settings.platform == "darwin" else "lo"


async def _route_conflicts(settings: DoctorSettings, docker: DockerClient, facts: _Facts) -> CheckResult:
    try:
        facts.networks = await docker.list_networks()
    except DockerError as error:
        return route_facts_missing_check("list Docker networks", error)
    # The manager marks routes through this interface as dmnc's own; without a running dmnc nothing is ours.
    loopback = _loopback(settings)
    tunnel = facts.snapshot.tunnel.interface if facts.snapshot is not None else None
    try:
        with trio.fail_after(STEP_TIMEOUT_S):
            facts.routes, host_networks = await _list_routes(tunnel or loopback, loopback)
            dns_servers = await read_host_dns_servers()
    except trio.TooSlowError:
        return timeout_check("route-conflicts", STEP_TIMEOUT_S)
    except RouteError as error:
        return route_facts_missing_check("read this host's routing table", error)
    networks = [route_info(network) for network in facts.networks]
    # The host state the service evaluates with (host_watch), but for the VM endpoint, which only it knows.
    host = HostState(tunnel=TUNNEL_NETWORKS, networks=host_networks, dns_servers=dns_servers)
    return route_conflict_check(networks, settings.config.routes, facts.routes, host)


async def _list_routes(interface: str, fallback_interface: str) -> tuple[list[InstalledRoute], tuple[HostNetwork, ...]]:
    """Every route of this host and the addresses of its interfaces but `interface` (where the platform's manager
    can tell them); through `fallback_interface` when `interface` is gone (dmnc stopping meanwhile)."""
    try:
        async with open_route_manager(interface) as manager:
            return await manager.list_routes(), await _host_networks(manager)
    except InterfaceNotFoundError:
        if interface == fallback_interface:
            raise
    async with open_route_manager(fallback_interface) as manager:
        return await manager.list_routes(), await _host_networks(manager)


async def _host_networks(manager: RouteManager) -> tuple[HostNetwork, ...]:
    source = host_address_source(manager)
    return () if source is None else await source.host_networks()


async def _dns_resolve(settings: DoctorSettings, docker: DockerClient, facts: _Facts) -> CheckResult:
    """Resolve a running container's name the way every program on this host does: getaddrinfo(3)."""
    snapshot = facts.snapshot
    dns = None if snapshot is None else snapshot.dns
    if snapshot is None or dns is None or dns.port is None:
        return dns_resolve_check(snapshot, facts.not_running, None, (), settings.platform)
    try:
        containers = await docker.list_containers()
    except DockerError as error:
        return CheckResult("dns-resolve", Verdict.FAIL, f"cannot list the running containers: {error}")
    target = resolve_target([endpoints_of(container) for container in containers], snapshot.routes, dns.domain)
    resolved: tuple[IPAddress, ...] | str = ()
    if target is not None:
        resolved = await system_resolve(target.name, RESOLVE_TIMEOUT_S)
    return dns_resolve_check(snapshot, facts.not_running, target, resolved, settings.platform)


async def system_resolve(name: str, timeout_s: float) -> tuple[IPAddress, ...] | str:
    """`name`'s addresses from getaddrinfo(3) in a worker thread, or why there are none. A resolver that does not
    answer within `timeout_s` is reported as such; its thread is abandoned and ends when getaddrinfo gives up."""
    lookup = functools.partial(socket.getaddrinfo, name, None, type=socket.SOCK_STREAM)
    with trio.move_on_after(timeout_s):
        try:
            found = await trio.to_thread.run_sync(lookup, abandon_on_cancel=True)
        except (OSError, UnicodeError) as error:
            # socket.gaierror (an OSError): "Name or service not known", "Temporary failure in name resolution".
            return (error.strerror or str(error)) if isinstance(error, OSError) else str(error)
        # An IPv6 link-local answer carries its scope (`fe80::1%en0`); dmnc never serves those, so it is dropped.
        addresses = {ipaddress.ip_address(str(entry[4][0]).partition("%")[0]) for entry in found}
        return tuple(sorted(addresses, key=lambda address: (address.version, address)))
    return f"no answer within {timeout_s:g} s"


def _resolver_files(settings: DoctorSettings, facts: _Facts) -> CheckResult:
    try:
        leftovers = leftover_resolver_files(settings.resolver_root) if settings.platform == "darwin" else []
    except OSError as error:
        return CheckResult("resolver-files", Verdict.FAIL, f"cannot read /etc/resolver: {error.strerror}")
    return leftover_resolver_check(leftovers, facts.snapshot, settings.platform)


def _probe_inputs(
    settings: DoctorSettings, facts: _Facts
) -> tuple[str, list[Network], list[InstalledRoute]] | CheckResult:
    """The probe image, the Docker networks and the host routes; or the SKIP result saying what is missing."""
    if settings.probe_image is None:
        return skipped(
            "probe",
            "pass --probe IMAGE (a small image with `sleep`, e.g. busybox) to reach a test container from this host",
        )
    if not settings.is_root:
        return skipped("probe", "needs root (it creates a network and a container in the VM)")
    if facts.snapshot is None:
        return skipped("probe", "needs a running dmnc (see handshake)")
    if facts.networks is None or facts.routes is None:
        return skipped("probe", "needs the network and route lists (see route-conflicts)")
    return settings.probe_image, facts.networks, facts.routes


async def _probe(settings: DoctorSettings, docker: DockerClient, facts: _Facts) -> CheckResult:
    inputs = _probe_inputs(settings, facts)
    if isinstance(inputs, CheckResult):
        return inputs
    image, networks, routes = inputs
    return await probe_check(
        docker, image, networks, routes, route_policy=settings.config.routes, timeout_s=settings.probe_timeout_s
    )
