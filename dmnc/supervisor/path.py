"""Which way dmnc's routes go, per address family: through the tunnel, or direct via the VM's own address on a link
the host shares with it (Colima's --network-address, Lima's shared network, Docker Desktop's `bridge101`, a
host-only bridge). The pure part: no I/O, no clock (`now` is an argument); the probes and the wiring live in
dmnc.supervisor.path_keeper.

A family goes direct only when all of these hold for one link the VM setup reported (and opened with the tunnel's
rules, SetupResult.direct_links):
- the host holds that link's host address on a non-tunnel interface, and a connected subnet there contains the
  VM's address (the kernel reaches it without a gateway);
- that interface holds none of the host's default routes: it is not the host's uplink (its LAN or Wi-Fi, as when a
  VM is bridged onto it), where container traffic would cross a network others share, unencrypted, and where the
  VM's rules, which trust the host by its address, would trust whoever claims it;
- the VM's address is none of the tunnel's and lies in no subnet dmnc routes (the VM's address is never routed
  through itself);
- a probe through that interface got an answer from the VM's address within PROBE_FRESH_S.
Otherwise the family stays on (or falls back to) the tunnel, with the reason. `--path tunnel` never goes direct;
`--path direct` decides the same way as `auto` but calls staying on the tunnel a problem (status and doctor).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from dmnc.config import PathOption
from dmnc.routes.manager import Address, Destination, InstalledRoute, NextHop
from dmnc.routes.policy import HostNetwork
from dmnc.vm.result import DirectLink

# A probe answer older than this no longer counts: with one probe a second, a direct path whose VM address stopped
# answering is given up within this many seconds ("falls back to the tunnel within seconds").
PROBE_FRESH_S = 3.0
IP_VERSIONS = (4, 6)

__all__ = ["PathOption"]  # re-exported: the option this module decides by


class PathKind(enum.Enum):
    TUNNEL = "tunnel"
    DIRECT = "direct"


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """The VM's address on a shared link, probed through the host's interface on that link."""

    address: Address
    interface: str


@dataclass(frozen=True, slots=True)
class ProbeResult:
    target: ProbeTarget
    answered: bool
    at: float  # the clock of the caller (trio.current_time())
    detail: str = ""  # why not, when it did not answer


@dataclass(frozen=True, slots=True)
class PathChoice:
    """Where one family's routes go, and why."""

    version: int
    next_hop: NextHop | None  # None: the tunnel
    reason: str
    problem: bool = False  # `--path direct` and yet the tunnel

    @property
    def kind(self) -> PathKind:
        return PathKind.TUNNEL if self.next_hop is None else PathKind.DIRECT


@dataclass(frozen=True, slots=True)
class Candidate:
    """A reported link, and what the host sees of it: its probe target, or why it cannot be a direct path."""

    link: DirectLink
    target: ProbeTarget | None
    rejected: str | None


def _family_name(version: int) -> str:
    return "IPv4" if version == 4 else "IPv6"


def examine_link(
    link: DirectLink,
    networks: Sequence[HostNetwork],
    *,
    tunnel_interface: str,
    tunnel_networks: Iterable[Destination],
    routed: Iterable[Destination],
    uplinks: Collection[str] = frozenset(),
) -> Candidate:
    """Whether the host reaches `link`'s VM address directly, and through which interface (`uplinks`: the
    interfaces of the host's default routes, see `uplink_interfaces`)."""
    vm, host = link.vm_address, link.host_address
    unusable = _unusable_vm_address(vm, networks, tunnel_networks, routed)
    if unusable is not None:
        return Candidate(link, None, unusable)
    host_interfaces = {
        network.interface
        for network in networks
        if network.interface != tunnel_interface
        and network.network.num_addresses == 1
        and network.network.network_address == host
    }
    if not host_interfaces:
        return Candidate(link, None, f"the host no longer has the address {host} the VM shares a link with")
    if host_interfaces <= set(uplinks):
        on = ", ".join(sorted(host_interfaces))
        return Candidate(
            link,
            None,
            f"the VM shares {on} with the host, and {on} holds the host's default route (its LAN): container traffic"
            " stays in the encrypted tunnel",
        )
    host_interfaces -= set(uplinks)
    for interface in sorted(host_interfaces):
        connected = [
            network
            for network in networks
            if network.interface == interface
            and network.network.version == vm.version
            and vm in network.network
            and network.network.num_addresses > 1
        ]
        if connected:
            return Candidate(link, ProbeTarget(vm, interface), None)
    return Candidate(
        link, None, f"the VM address {vm} is in no subnet connected to {', '.join(sorted(host_interfaces))}"
    )


def _unusable_vm_address(
    vm: Address, networks: Sequence[HostNetwork], tunnel_networks: Iterable[Destination], routed: Iterable[Destination]
) -> str | None:
    """Why the VM's address can never be a next hop, or None."""
    if any(vm in network for network in tunnel_networks):
        return f"the VM address {vm} is one of the tunnel's"
    if any(vm in subnet for subnet in routed):
        return f"the VM address {vm} lies in a subnet dmnc routes, so it cannot be the next hop"
    if any(network.network.num_addresses == 1 and network.network.network_address == vm for network in networks):
        return f"the VM address {vm} is one of the host's own"
    return None


def examine_links(
    links: Iterable[DirectLink],
    networks: Sequence[HostNetwork],
    *,
    tunnel_interface: str,
    tunnel_networks: Sequence[Destination] = (),
    routed: Sequence[Destination] = (),
    uplinks: Collection[str] = frozenset(),
) -> tuple[Candidate, ...]:
    """Every reported link, examined (`examine_link`), in a stable order."""
    ordered = sorted(links, key=lambda link: (link.vm_address.version, str(link.vm_address), link.vm_interface))
    return tuple(
        examine_link(
            link,
            networks,
            tunnel_interface=tunnel_interface,
            tunnel_networks=tunnel_networks,
            routed=routed,
            uplinks=uplinks,
        )
        for link in ordered
    )


def uplink_interfaces(routes: Iterable[InstalledRoute]) -> frozenset[str]:
    """The interfaces that hold a default route (prefix length 0) of another program's: the host's way out (LAN,
    Wi-Fi, a VPN). A VM link is never one of them (a host-only or shared network such as macOS's bridge100 has the
    host as its router), unless the VM is bridged onto the host's own LAN."""
    return frozenset(route.interface for route in routes if route.destination.prefixlen == 0 and not route.ours)


def probe_targets(candidates: Iterable[Candidate]) -> tuple[ProbeTarget, ...]:
    """What to probe: each candidate's target, once, IPv4 first."""
    targets = {candidate.target for candidate in candidates if candidate.target is not None}
    return tuple(sorted(targets, key=lambda target: (target.address.version, target.address, target.interface)))


def choose_path(
    version: int,
    option: PathOption,
    candidates: Sequence[Candidate],
    probes: Mapping[ProbeTarget, ProbeResult],
    now: float,
) -> PathChoice:
    """Where routes of IP `version` go, as of `now` (see the module docstring)."""
    if option is PathOption.TUNNEL:
        return PathChoice(version, None, "--path tunnel")
    family = _family_name(version)
    mine = [candidate for candidate in candidates if candidate.link.vm_address.version == version]
    reasons: list[str] = []
    for candidate in mine:
        target = candidate.target
        if target is None:
            reasons.append(candidate.rejected or "rejected")
            continue
        probe = probes.get(target)
        where = f"{target.address} via {target.interface}"
        if probe is None or now - probe.at > PROBE_FRESH_S:
            reasons.append(f"{where} is being probed")
        elif not probe.answered:
            reasons.append(f"{where} did not answer the probe{f' ({probe.detail})' if probe.detail else ''}")
        else:
            next_hop = NextHop(target.address, target.interface)
            return PathChoice(
                version,
                next_hop,
                f"the VM answers at {where} (its {candidate.link.vm_interface}), a link the host shares with it",
            )
    if not mine:
        reasons.append(f"the VM reported no {family} address on a link it shares with the host")
    reason = "; ".join(reasons)
    if option is PathOption.DIRECT:
        return PathChoice(version, None, f"--path direct, but {reason}: {family} stays on the tunnel", problem=True)
    return PathChoice(version, None, reason)


def choose_paths(
    option: PathOption, candidates: Sequence[Candidate], probes: Mapping[ProbeTarget, ProbeResult], now: float
) -> tuple[PathChoice, ...]:
    """`choose_path` for IPv4, then IPv6."""
    return tuple(choose_path(version, option, candidates, probes, now) for version in IP_VERSIONS)


def direct_host_addresses(
    networks: Iterable[HostNetwork],
    *,
    tunnel_interface: str,
    tunnel_networks: Sequence[Destination],
    limit: int,
    uplinks: Collection[str] = frozenset(),
) -> tuple[Address, ...]:
    """The host's own addresses the VM setup may look for shared links with (SetupParams.direct_hosts): every
    address of a non-tunnel interface but the uplinks' (the VM never opens its side to the host's LAN address),
    loopback, link-local and the tunnel's, at most `limit`, IPv4 first."""
    found: set[Address] = set()
    for network in networks:
        address = network.network.network_address
        if (
            network.interface == tunnel_interface
            or network.interface in uplinks
            or network.network.num_addresses != 1
            or address.is_loopback
            or address.is_link_local
            or address.is_multicast
            or address.is_unspecified
            or any(address in tunnel for tunnel in tunnel_networks)
        ):
            continue
        found.add(address)
    return tuple(sorted(found, key=lambda address: (address.version, address)))[:limit]
