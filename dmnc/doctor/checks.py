"""`dmnc doctor`'s verdicts: facts in, one `CheckResult` out, each with a concrete fix.

Pure: no I/O and no clock (ages arrive in the facts), so the wording users see is unit-tested with plain values.
`dmnc.doctor.gather` collects the facts and `dmnc.doctor.probe` runs the probe container; both hand their findings
to these functions.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import ipaddress
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from dmnc.control.messages import DnsStatus, RouteStatus, StatusSnapshot, format_drops
from dmnc.dns.hint import resolver_hint
from dmnc.dns.names import ContainerEndpoints, IPAddress, Reachability, build_table
from dmnc.dns.server import DNS_PORT
from dmnc.docker.discovery import Runtime
from dmnc.docker.errors import DiscoveryError, DockerError
from dmnc.routes import InstalledRoute
from dmnc.routes.policy import VM_NO_IPV6_FIX, HostState, NetworkInfo, PolicyConfig, SkipReason, evaluate
from dmnc.supervisor.conflicts import Conflict
from dmnc.system_service import HOMEBREW_LAUNCHD_PLIST_PATH, LAUNCHD_PLIST_PATH
from dmnc.tunnel.udp import UdpError
from dmnc.vm.errors import VmSetupError, foreign_interface_remedy
from dmnc.vm.nftables import DockerNftables, published_ports_note, unmarked_fix, unmarked_problem
from dmnc.vm.result import ForeignInterface, KernelWireGuardMissing, KernelWireGuardPresent
from dmnc.vm.shims import RESERVE_HINT, WHY_NOT_PICKED

# A session's keys are refused REJECT_AFTER_TIME after its handshake (whitepaper section 6.1, 180 s); a live tunnel
# rekeys every REKEY_AFTER_TIME (120 s) while it carries traffic, so an older handshake means the tunnel is dead.
REJECT_AFTER_TIME_S = 180.0

ROOT_ONLY_CHECKS = ("vm-wireguard", "probe")
# Where podman machine keeps its VMs' API sockets (~/.local/share/containers/podman/machine/...); a Podman socket
# anywhere else on Linux is the native service (/run/podman/podman.sock, /run/user/<uid>/podman/podman.sock).
PODMAN_MACHINE_PATH = "/podman/machine/"
_PORT_TEXT = re.compile(r"[0-9]{1,5}")
# Private address space (RFC 1918 section 3, RFC 4193 section 3): where VM networks such as Colima's vmnet and
# bridges live. Not ipaddress's is_private, which also covers documentation and other special-purpose ranges.
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(network) for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


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


def kernel_check(outcome: KernelWireGuardPresent | KernelWireGuardMissing | ForeignInterface) -> CheckResult:
    if isinstance(outcome, ForeignInterface):
        return foreign_interface_check(outcome)
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


# `GET /info` FirewallBackend.Driver of Docker's nftables backend (Engine API, FirewallInfo).
NFTABLES_DRIVER = "nftables"


def docker_firewall_check(
    outcome: KernelWireGuardPresent | KernelWireGuardMissing | None, interface: str, reported_driver: str = ""
) -> CheckResult:
    """What Docker's firewall does to the tunnel's packets, from the VM check's view of Docker's nftables tables
    (None: the check did not run) and the firewall driver the daemon reports in `GET /info` ("" when it does not)."""
    nftables_reported = reported_driver == NFTABLES_DRIVER
    if outcome is None:
        reported = " (Docker reports its nftables backend)" if nftables_reported else ""
        return skipped("docker-firewall", f"needs the VM check (see vm-wireguard){reported}")
    if outcome.docker_nftables is None and nftables_reported:
        return CheckResult(
            "docker-firewall",
            Verdict.FAIL,
            "Docker reports its nftables firewall backend, but the setup container found none of its tables: the"
            " setup image has no `nft`, so dmnc cannot mark the tunnel's packets",
            fix="use dmnc's default setup image, or add nftables (`nft`) to the one --setup-image names",
        )
    if outcome.docker_nftables is None:
        return CheckResult(
            "docker-firewall", Verdict.PASS, "Docker's firewall is iptables: dmnc's DOCKER-USER and raw rules apply"
        )
    if outcome.docker_nftables is DockerNftables.MARKED:
        return CheckResult(
            "docker-firewall",
            Verdict.PASS,
            "Docker's firewall is nftables and accepts a mark (bridge-accept-fwmark): dmnc marks the tunnel's packets;"
            f" {published_ports_note(interface)}",
        )
    return CheckResult("docker-firewall", Verdict.FAIL, unmarked_problem(), fix=unmarked_fix(interface))


def foreign_interface_check(outcome: ForeignInterface) -> CheckResult:
    """The VM's interface is another tool's (docker-mac-net-connect's chip0): every setup of dmnc's refuses."""
    return CheckResult(
        "vm-wireguard",
        Verdict.FAIL,
        f"the VM already has an interface {outcome.interface} that is not dmnc's (docker-mac-net-connect's?):"
        " dmnc leaves it alone and cannot set its own up",
        fix=foreign_interface_remedy(outcome.interface),
    )


def split_host_port(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str] | None:
    """(address, port text) of `ADDR:PORT` or `[ADDR]:PORT` (config.format_host_port's form); None otherwise."""
    host, _, port_text = text.rpartition(":")
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    return (address, port_text) if _PORT_TEXT.fullmatch(port_text) else None


def _is_private(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(address in network for network in _PRIVATE_NETWORKS)


def listen_advice(listen: str | None, vm_endpoint: str | None, local_address: str | None) -> str | None:
    """How to narrow `--listen` to the one address the VM reaches dmnc on, when that is known and stable: the VM's
    packets come from loopback (Docker Desktop forwards them through the host's own stack), or from a private address
    (RFC 1918, RFC 4193: Colima's vmnet, a bridge) that this host reaches from a private address of its own
    (`local_address`, the source address the host would use toward the VM). None when dmnc already listens on one
    address or nothing stable is known."""
    listening = None if listen is None else split_host_port(listen)
    vm = None if vm_endpoint is None else split_host_port(vm_endpoint)
    if listening is None or vm is None or not listening[0].is_unspecified:
        return None
    vm_address, port = vm[0], listening[1]
    if vm_address.is_loopback:
        narrow = vm_address
    else:
        local = None if local_address is None else split_host_port(f"[{local_address}]:{port}")
        if local is None or not (_is_private(vm_address) and _is_private(local[0])):
            return None
        narrow = local[0]
    shown = f"[{narrow}]" if narrow.version == 6 else str(narrow)
    return (
        f"dmnc listens on every address, but the VM dials it from {vm_endpoint}: --listen {shown}:{port} (or"
        " `listen` in the config file) accepts its packets on that address only"
    )


def handshake_check(snapshot: StatusSnapshot | None, not_running: str, local_address: str | None = None) -> CheckResult:
    """The running dmnc's tunnel to the VM, from its status: last handshake age and dropped packets; with a live
    tunnel, how to narrow `--listen` when the VM dials from one stable address (`listen_advice`)."""
    if snapshot is None:
        return CheckResult("handshake", Verdict.SKIP, not_running)
    tunnel = snapshot.tunnel
    drops = format_drops(tunnel.drops)
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
        fix=listen_advice(tunnel.listen, tunnel.endpoint, local_address),
    )


# Rules that leave a subnet out because this host itself uses it: no option changes them, so doctor says so.
HOST_STATE_RULES = frozenset(
    {SkipReason.TUNNEL, SkipReason.HOST_NETWORK, SkipReason.VM_ENDPOINT, SkipReason.DNS_SERVER}
)


def route_conflict_check(
    networks: Sequence[NetworkInfo],
    policy: PolicyConfig,
    routes: Iterable[InstalledRoute],
    host: HostState | None = None,
) -> CheckResult:
    """Docker subnets that overlap host routes dmnc does not own (VPN, LAN), naming both, and those the host's own
    traffic (its addresses and connected subnets, DNS servers, the tunnel) keeps out whatever the options."""
    installed = list(routes)
    ours = {route.destination for route in installed if route.ours}
    result = evaluate(networks, policy, other_routes=installed, already_routed=ours, host=host or HostState())
    blocked = [finding for finding in result.overlaps if not finding.routed]
    forced = [finding for finding in result.overlaps if finding.routed]
    host_skips = [
        f"network {skip.network!r} subnet {skip.subnet} is not routed: {skip.describe()}"
        for skip in result.skipped
        if skip.reason in HOST_STATE_RULES
    ]
    if blocked:
        return CheckResult(
            "route-conflicts",
            Verdict.FAIL,
            "; ".join([*(finding.describe() for finding in blocked + forced), *host_skips]),
            fix="give the Docker network a subnet that overlaps nothing (docker network create --subnet ..., or the"
            " daemon's default-address-pools), exclude it with --route-exclude, or route it anyway with"
            " --route-over SUBNET",
        )
    if forced:
        return CheckResult(
            "route-conflicts",
            Verdict.WARN,
            "; ".join([*(finding.describe() for finding in forced), *host_skips]),
            fix="the other route (VPN? LAN?) loses those addresses while dmnc routes them: change the Docker subnet",
        )
    if host_skips:
        return CheckResult(
            "route-conflicts",
            Verdict.WARN,
            "; ".join(host_skips),
            fix="give the Docker network a subnet this host does not use itself (docker network create --subnet ...,"
            " or the daemon's default-address-pools)",
        )
    on_lan = "".join(
        f"; network {skip.network!r} subnet {skip.subnet} is reachable directly on your LAN ({skip.detail})"
        for skip in result.skipped
        if skip.reason is SkipReason.ON_HOST_LAN
    )
    return CheckResult(
        "route-conflicts",
        Verdict.PASS,
        f"{len(result.desired)} subnet(s) to route, none overlaps another route of this host{on_lan}",
    )


# Routes dmnc leaves out on purpose (policy, overlaps: see route-conflicts) carry these decisions in its status
# (schema 2), or, from a schema 1 service, a reason that starts with the rule's text.
_DELIBERATE_DECISIONS = frozenset(reason.decision for reason in SkipReason)
_DELIBERATE_SKIPS = frozenset(reason.value for reason in SkipReason)
# A route dmnc wants but has not added yet: normal for a second after a network appears.
_NOT_YET = "not installed yet"


def installed_routes_check(snapshot: StatusSnapshot | None, not_running: str) -> CheckResult:
    """The running dmnc's routes: every container subnet it wants is installed, or why not."""
    if snapshot is None:
        return CheckResult("routes", Verdict.SKIP, not_running)
    left_out = [route for route in snapshot.routes if not route.installed and _deliberate(route)]
    wanted = [route for route in snapshot.routes if route not in left_out]
    missing = [route for route in wanted if not route.installed]
    interface = snapshot.tunnel.interface or "the tunnel"
    decided = "".join(_left_out(route) for route in left_out)
    if not missing:
        detail = f"{len(wanted)} container subnet(s) routed through {interface}{decided}"
        if any(route.decision == SkipReason.VM_NO_IPV6.decision for route in left_out):
            # Not a choice of the user's: containers on those subnets cannot be reached by IPv6 until the VM has it.
            return CheckResult("routes", Verdict.WARN, detail, fix=VM_NO_IPV6_FIX)
        if any(route.decision == SkipReason.NO_SHIM.decision for route in left_out):
            # The user's containers on a macvlan/ipvlan network stay out of reach until it has a reservation.
            return CheckResult("routes", Verdict.WARN, detail, fix=f"{RESERVE_HINT}; {WHY_NOT_PICKED}")
        return CheckResult("routes", Verdict.PASS, detail)
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


# Docker Desktop 4.26+ gives its VM an address the Mac reaches directly when this setting is on (bridge101 on the
# Mac, eth1 in the VM): the direct path then carries container traffic at kernel speed.
DOCKER_DESKTOP_DIRECT_FIX = (
    'turn on Docker Desktop\'s "kernel networking for UDP" (Settings > Resources > Network; Docker Desktop 4.26+),'
    " which gives the VM an address the Mac reaches directly; dmnc --path auto then routes containers via it"
)
DIRECT_PATH_FIX = (
    "give the VM an address the host reaches directly (Colima --network-address, a Lima shared or vzNAT network,"
    " a host-only bridge), or run dmnc with --path auto to accept the tunnel"
)


def path_check(snapshot: StatusSnapshot | None, not_running: str) -> CheckResult:
    """Where the running dmnc sends each address family (tunnel or direct) and why; a `--path direct` left on the
    tunnel is a warning, and on Docker Desktop the setting that gives its VM a direct address is named."""
    if snapshot is None:
        return CheckResult("path", Verdict.SKIP, not_running)
    if not snapshot.paths:
        return CheckResult("path", Verdict.SKIP, "the running dmnc reports no paths (an older release)")
    parts = []
    for path in snapshot.paths:
        family = "IPv4" if path.family == "ipv4" else "IPv6"
        where = "tunnel" if path.next_hop is None else f"direct via {path.next_hop} dev {path.interface}"
        parts.append(f"{family} {where} ({path.reason})")
    detail = "; ".join(parts)
    on_docker_desktop = snapshot.docker.runtime == Runtime.DOCKER_DESKTOP.value
    all_tunnel = all(path.next_hop is None for path in snapshot.paths)
    fix = DOCKER_DESKTOP_DIRECT_FIX if on_docker_desktop else DIRECT_PATH_FIX
    if any(path.problem for path in snapshot.paths):
        return CheckResult("path", Verdict.WARN, detail, fix=fix)
    if on_docker_desktop and all_tunnel and not all(path.reason == "--path tunnel" for path in snapshot.paths):
        return CheckResult("path", Verdict.PASS, detail, fix=f"for kernel speed, {DOCKER_DESKTOP_DIRECT_FIX}")
    return CheckResult("path", Verdict.PASS, detail)


def _left_out(route: RouteStatus) -> str:
    if route.decision == SkipReason.ON_HOST_LAN.decision:
        return f"; {route.subnet} ({route.network}) is reachable directly on your LAN"
    return f"; not routed: {route.subnet} ({route.network}): {route.reason}"


def _deliberate(route: RouteStatus) -> bool:
    if route.decision is not None:
        return route.decision in _DELIBERATE_DECISIONS
    rule = (route.reason or "").split(":")[0].split(";")[0]
    return rule in _DELIBERATE_SKIPS


def skipped(name: str, reason: str) -> CheckResult:
    return CheckResult(name, Verdict.SKIP, reason)


def timeout_check(name: str, seconds: float) -> CheckResult:
    return CheckResult(
        name,
        Verdict.FAIL,
        f"no answer within {seconds:g} s",
        fix="run dmnc doctor again; if it persists, restart Docker",
    )


def docker_answers_check(source: str, url: str, engine_version: str | None) -> CheckResult:
    return CheckResult("docker", Verdict.PASS, f"{source}: {url} answers (engine {engine_version or '?'})")


def setup_image_unknown_check(image: str, error: DockerError) -> CheckResult:
    return CheckResult("setup-image", Verdict.FAIL, f"cannot look up {image}: {error}")


def kernel_test_failed_check(error: VmSetupError | DockerError) -> CheckResult:
    return CheckResult(
        "vm-wireguard",
        Verdict.FAIL,
        f"the setup container could not test the VM kernel: {error}",
        fix="the engine must allow --net=host containers with NET_ADMIN (rootless engines do not), and a"
        " --setup-image needs /bin/sh, ip and wg",
    )


def route_facts_missing_check(what: str, error: Exception) -> CheckResult:
    """route-conflicts when its inputs cannot be read: `what` says which (Docker's networks, the routing table)."""
    return CheckResult("route-conflicts", Verdict.FAIL, f"cannot {what}: {error}")


# Containers by name (dmnc/dns): the running dmnc's DNS server, the system resolver's view of it, and
# /etc/resolver files a stopped dmnc left behind.


def dns_server_check(snapshot: StatusSnapshot | None, not_running: str) -> CheckResult:
    """The running dmnc's DNS server from its status: domain, addresses and port (53 or the fallback), names."""
    if snapshot is None:
        return CheckResult("dns", Verdict.SKIP, not_running)
    dns = snapshot.dns
    if dns is None:
        return CheckResult("dns", Verdict.SKIP, "the running dmnc serves no DNS (--no-dns, or a dmnc before 0.2)")
    if dns.port is None:
        return CheckResult(
            "dns",
            Verdict.FAIL,
            f"container names under {dns.domain} do not resolve: {dns.problem or 'the DNS server is not serving'}",
            fix="read dmnc's log (the tunnel is unaffected); restart dmnc once the cause is gone",
        )
    where = f"{', '.join(dns.addresses)} port {dns.port}"
    fallback = "" if dns.port == DNS_PORT else f" (port {DNS_PORT} was taken)"
    drops = "".join(f", {reason} {count}" for reason, count in sorted(dns.drops.items()))
    detail = f"answers for {dns.domain} on {where}{fallback}: {dns.records} name(s){drops}"
    host_resolver = dns.host_resolver or "not configured"
    if host_resolver.startswith("not configured"):
        return CheckResult(
            "dns",
            Verdict.WARN,
            f"{detail}; the host's resolver does not ask it ({host_resolver})",
            fix=resolver_hint(dns.domain, dns.addresses, dns.port),
        )
    return CheckResult("dns", Verdict.PASS, f"{detail}; the host asks it through {host_resolver}")


@dataclasses.dataclass(frozen=True)
class ResolveTarget:
    """A name the running dmnc serves, and the addresses it answers for it."""

    name: str
    addresses: tuple[IPAddress, ...]


def resolve_target(
    containers: Iterable[ContainerEndpoints], routes: Iterable[RouteStatus], domain: str
) -> ResolveTarget | None:
    """The first (by name) running container with a `<container>.<domain>` name, built like dmnc's own table from
    the routes the running dmnc has installed; None when no container has one."""
    routed = frozenset(route.subnet for route in routes if route.installed)
    table = build_table(containers, Reachability(routed, ipv6=True))
    names = sorted(labels for labels in table.records if len(labels) == 1)
    if not names:
        return None
    labels = names[0]
    return ResolveTarget(f"{labels[0].decode('ascii')}.{domain}", table.records[labels])


def dns_resolve_check(
    snapshot: StatusSnapshot | None,
    not_running: str,
    target: ResolveTarget | None,
    resolved: Sequence[IPAddress] | str,
    platform: str = sys.platform,
) -> CheckResult:
    """Whether the system resolver (getaddrinfo) finds a running container by name: `resolved` is its addresses or
    the error text. On failure the fix says how this platform's resolver is pointed at dmnc."""
    dns = None if snapshot is None else snapshot.dns
    if snapshot is None or dns is None or dns.port is None:
        return skipped("dns-resolve", not_running if snapshot is None else "needs dmnc's DNS server (see dns)")
    if target is None:
        return skipped("dns-resolve", f"no running container has a name under {dns.domain} yet (start one)")
    expected = ", ".join(str(address) for address in target.addresses)
    if isinstance(resolved, str):
        found = f"{target.name} does not resolve through the system resolver ({resolved}); dmnc answers {expected}"
    else:
        shown = ", ".join(str(address) for address in resolved)
        if set(resolved) & set(target.addresses):
            return CheckResult("dns-resolve", Verdict.PASS, f"{target.name} resolves to {shown} (system resolver)")
        found = (
            f"{target.name} resolves to {shown} through the system resolver, not to dmnc's {expected}: another"
            f" resolver answers for {dns.domain}"
        )
    fix = system_resolver_fix(dns, target.name, snapshot, platform)
    return CheckResult("dns-resolve", Verdict.FAIL, found, fix=fix)


def system_resolver_fix(dns: DnsStatus, name: str, snapshot: StatusSnapshot, platform: str) -> str:
    """How to make this platform's system resolver ask dmnc for its domain."""
    address, port = dns.addresses[0] if dns.addresses else "10.33.33.1", dns.port or DNS_PORT
    if platform == "darwin":
        # resolver(5): one file per domain; `port` only when not 53. dig and nslookup read only /etc/resolv.conf.
        port_line = "" if port == DNS_PORT else f"\\nport {port}"
        return (
            f"`scutil --dns` must list a resolver for domain {dns.domain} with nameserver {address}; dmnc writes"
            f" /etc/resolver/{dns.domain} at start (read its log if missing), by hand: printf 'nameserver"
            f" {address}{port_line}\\n' | sudo tee /etc/resolver/{dns.domain}; test with"
            f" `dscacheutil -q host -a name {name}` (dig and nslookup bypass /etc/resolver)"
        )
    configured = dns.host_resolver or ""
    if platform == "linux" and configured.startswith("systemd-resolved"):
        # systemd-resolved.service(8) "/etc/resolv.conf": glibc reaches resolved through the stub file or nss-resolve.
        return (
            f"systemd-resolved has the link settings (`resolvectl query {name}` asks it directly), but glibc does not"
            " ask resolved: link /etc/resolv.conf to /run/systemd/resolve/stub-resolv.conf (nameserver 127.0.0.53),"
            " or put `resolve` before `dns` on the hosts line of /etc/nsswitch.conf"
        )
    if platform == "linux":
        interface = snapshot.tunnel.interface or "dmnc0"
        server = address if port == DNS_PORT else f"{address}:{port}"
        return (
            f"with systemd-resolved: `resolvectl dns {interface} {server}; resolvectl domain {interface}"
            f" ~{dns.domain}; resolvectl default-route {interface} false` (dmnc does this itself when resolved"
            f" runs); without it, {resolver_hint(dns.domain, dns.addresses or (address,), port)}"
        )
    return resolver_hint(dns.domain, dns.addresses or (address,), port)


def leftover_resolver_check(
    leftovers: Sequence[Path], snapshot: StatusSnapshot | None, platform: str = sys.platform
) -> CheckResult:
    """/etc/resolver files dmnc wrote (`leftovers`, found by their marker) that no running dmnc uses: the system
    still sends those domains to an address nobody answers on, so every lookup there waits and fails."""
    if platform != "darwin":
        return skipped("resolver-files", "macOS only (/etc/resolver, resolver(5))")
    in_use = None if snapshot is None or snapshot.dns is None else snapshot.dns.domain
    stale = [path for path in leftovers if path.name != in_use]
    if not stale:
        running = f"; the running dmnc's is /etc/resolver/{in_use}" if in_use is not None else ""
        return CheckResult("resolver-files", Verdict.PASS, f"no leftover /etc/resolver file of dmnc's{running}")
    shown = " ".join(str(path) for path in stale)
    who = "no dmnc runs" if snapshot is None else "the running dmnc serves another domain"
    return CheckResult(
        "resolver-files",
        Verdict.WARN,
        f"{shown}: written by a dmnc, but {who}: lookups under that domain wait for an answer that never comes",
        fix=f"sudo dmnc uninstall (removes them), or sudo rm {shown}",
    )


# Coexistence (dmnc.supervisor.conflicts): another program holding what dmnc's tunnel needs, and dmnc's own
# services installed twice.


def coexistence_check(
    conflicts: Sequence[Conflict],
    *,
    both_dmnc_services: bool,
    standby: str | None,
    platform: str,
    own_tunnel_unknown: str | None = None,
) -> CheckResult:
    """`conflicts` were found with dmnc's own TUN left out, when the running dmnc's status named it;
    `own_tunnel_unknown` says why it could not be (the status was unreadable), so a conflict may be dmnc itself.
    `standby` is the running dmnc's own reason for waiting, which may name what only it sees (the VM's chip0)."""
    if conflicts:
        detail = "; ".join(conflict.found for conflict in conflicts)
        fix = "; ".join(dict.fromkeys(conflict.remedy for conflict in conflicts))
        if own_tunnel_unknown is not None:
            return CheckResult(
                "coexistence",
                Verdict.WARN,
                f"{detail} (this may be dmnc's own tunnel: {own_tunnel_unknown})",
                fix=f"sudo dmnc doctor reads the running dmnc's status; otherwise {fix}",
            )
        return CheckResult("coexistence", Verdict.FAIL, detail, fix=fix)
    if both_dmnc_services:
        return CheckResult(
            "coexistence",
            Verdict.WARN,
            f"both dmnc launchd services are installed ({LAUNCHD_PLIST_PATH} and {HOMEBREW_LAUNCHD_PLIST_PATH}): one"
            " runs, the other waits in standby",
            fix="keep one: `sudo brew services stop dmnc`, or `sudo dmnc service uninstall` for dmnc's own",
        )
    if standby is not None:
        return CheckResult(
            "coexistence",
            Verdict.WARN,
            f"the running dmnc waits in standby: {standby}",
            fix="stop what the standby reason names; dmnc takes over by itself once it is gone",
        )
    launchd = " and docker-mac-net-connect's launchd service is not installed" if platform == "darwin" else ""
    return CheckResult("coexistence", Verdict.PASS, f"no other interface holds the tunnel addresses{launchd}")
