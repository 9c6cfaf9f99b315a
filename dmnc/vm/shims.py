"""Which macvlan/ipvlan "shims" the VM needs so that traffic from the tunnel reaches such containers (pure).

A Linux host cannot talk to its own macvlan children through their parent (Docker docs, "Macvlan network driver":
"the Docker host cannot communicate with the containers"; the kernel's macvlan driver forwards frames between a
parent and its children only in the children's bridge mode, never from the parent itself). The same holds inside the
Docker VM. The way round is one more macvlan link on the same parent in bridge mode, the shim, holding a /32 address
Docker never hands out, with a route to the range the containers get through it. For ipvlan an ipvlan link in the
network's own mode does the same: the mode belongs to the parent's whole ipvlan port (the kernel's ipvlan driver,
ipvlan_set_port_mode, switches every link of the port), and in L3 and L3S modes one ipvlan link reaches another by
address within the port (Documentation/networking/ipvlan.rst), which the VM's default namespace cannot do without a
link of its own (Docker docs, "IPvlan network driver"). L3 links answer no ARP, so an L3 shim needs a reservation.

The shim's address is never guessed:
- the network's `--aux-address` named `dmnc` or `host` (Docker keeps reserved names out of its allocator);
- else, with an `--ip-range`, an address of the subnet outside that range that is not the gateway, the subnet's
  first or last address, or any reservation: the setup script uses it only after an ARP duplicate-address probe
  (RFC 5227 section 2.1.1) on the shim link shows it free;
- else no shim: the last address of a subnet is often a LAN router, or Docker Desktop's host.docker.internal, so
  dmnc will not pick one; `NoShim.fix` says how to reserve one.
An IPv6 pool gets a shim of its own (a link per pool) from its own reservation only: a duplicate-address probe would
be NDP's, not ARP's. The route is the containers' range, not the subnet, so the VM's own traffic to that LAN and
its gateway stays on the parent; only with an aux-address and no range is the subnet routed.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import overload

from dmnc.docker.models import IpamConfig, Network
from dmnc.routes.policy import NetworkInfo

# Names of an `--aux-address NAME=IP` reservation dmnc takes as the shim's address, in order of preference.
RESERVATION_NAMES = ("dmnc", "host")
# Link names: this prefix, 8 hex digits of the network ID and the pool's index; 14 characters, under IFNAMSIZ
# (16 with the NUL, include/uapi/linux/if.h). Teardown removes every link with the prefix.
SHIM_LINK_PREFIX = "dmncm"
_ID_DIGITS = 8
_MAX_POOLS = 10
# ipvlan's mode option and its default (Docker docs, "IPvlan network driver": `-o ipvlan_mode=l2|l3|l3s`, l2
# by default).
IPVLAN_MODE_OPTION = "ipvlan_mode"
IPVLAN_L2 = "l2"
# How many free-looking addresses outside the range the script may probe before giving up on a network.
MAX_PROBE_CANDIDATES = 3
RESERVE_HINT = "reserve one with `docker network create --aux-address dmnc=IP ...` (an address outside --ip-range)"
WHY_NOT_PICKED = (
    "dmnc does not pick one itself: the last address of a subnet can be the router of a real LAN or Docker"
    " Desktop's host.docker.internal"
)


class ShimKind(enum.Enum):
    """The link type of a shim: the same driver (and ipvlan mode) as the network's containers."""

    MACVLAN = "macvlan"
    IPVLAN = "ipvlan"
    """ipvlan in L2 mode."""
    IPVLAN_L3 = "ipvlan-l3"
    IPVLAN_L3S = "ipvlan-l3s"

    @property
    def probes(self) -> bool:
        """Whether an ARP probe can find a free address on such a link (L3 ipvlan links do no ARP)."""
        return self in {ShimKind.MACVLAN, ShimKind.IPVLAN}


_IPVLAN_KINDS = {IPVLAN_L2: ShimKind.IPVLAN, "l3": ShimKind.IPVLAN_L3, "l3s": ShimKind.IPVLAN_L3S}


@dataclass(frozen=True, slots=True)
class Shim:
    """One shim link to (re)create in the VM: `addresses` are tried in order, the first is used as is when it is a
    reservation (`probe` False), else after an ARP probe shows it free (`probe` True)."""

    network: str
    link: str
    kind: ShimKind
    parent: str
    addresses: tuple[ipaddress.IPv4Address, ...] | tuple[ipaddress.IPv6Address, ...]
    route: ipaddress.IPv4Network | ipaddress.IPv6Network
    probe: bool


@dataclass(frozen=True, slots=True)
class NoShim:
    """A macvlan/ipvlan subnet that gets no shim: why, and what would give it one."""

    network: str
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    reason: str
    fix: str

    def describe(self) -> str:
        return f"{self.reason}; {self.fix}"


@dataclass(frozen=True, slots=True)
class ShimPlan:
    shims: tuple[Shim, ...] = ()
    missing: tuple[NoShim, ...] = ()

    def missing_for(self, network: str) -> tuple[NoShim, ...]:
        return tuple(item for item in self.missing if item.network == network)


def shim_kind(network: Network) -> ShimKind | None:
    """The shim a network's containers need, None for every other driver and for an unknown ipvlan mode."""
    if network.driver == ShimKind.MACVLAN.value:
        return ShimKind.MACVLAN
    if network.driver == ShimKind.IPVLAN.value:
        return _IPVLAN_KINDS.get(network.options.get(IPVLAN_MODE_OPTION, IPVLAN_L2).lower())
    return None


def plan_shims(networks: Iterable[Network]) -> ShimPlan:
    """The shims for every local macvlan and ipvlan (L2) network, and the subnets that get none, sorted by network
    name so the same networks give the same setup arguments."""
    shims: list[Shim] = []
    missing: list[NoShim] = []
    for network in sorted(networks, key=lambda item: (item.name, item.id)):
        for item in _network_shims(network):
            if isinstance(item, Shim):
                shims.append(item)
            else:
                missing.append(item)
    return ShimPlan(tuple(shims), tuple(missing))


def route_info(network: Network) -> NetworkInfo:
    """What the route policy needs of `network`, with the subnets that get no shim marked (SkipReason.NO_SHIM)."""
    info = NetworkInfo.of(network)
    no_shim = {}
    for item in plan_shims([network]).missing:
        for subnet in network.subnets if item.subnet is None else (item.subnet,):
            no_shim[subnet] = (item.reason, item.fix)
    return dataclasses.replace(info, no_shim=no_shim) if no_shim else info


def _network_shims(network: Network) -> Iterator[Shim | NoShim]:
    if network.scope != "local":
        return
    kind = shim_kind(network)
    if kind is None:
        if network.driver == ShimKind.IPVLAN.value:
            mode = network.options.get(IPVLAN_MODE_OPTION, "")
            yield NoShim(
                network.name,
                None,
                f"ipvlan network of the unknown mode {mode[:20]!r}: dmnc makes shims for l2, l3 and l3s",
                "use ipvlan_mode=l2, l3 or l3s, or macvlan, to reach it through dmnc",
            )
        return
    if not network.parent:
        yield NoShim(
            network.name,
            None,
            f"{kind.value} network without a parent interface (Docker made a dummy one: nothing leaves it)",
            "create it with `-o parent=IF`",
        )
        return
    for index, config in enumerate(network.ipam_configs[:_MAX_POOLS]):
        subnet = config.subnet
        if isinstance(subnet, ipaddress.IPv6Network):
            yield _pool_shim6(network, kind, index, subnet, config)
        elif subnet is not None:
            yield _pool_shim(network, kind, index, subnet, config)


def _pool_shim6(
    network: Network, kind: ShimKind, index: int, subnet: ipaddress.IPv6Network, config: IpamConfig
) -> Shim | NoShim:
    """An IPv6 pool's shim: from a reservation only (a duplicate-address probe would be NDP's, RFC 4862 section 5.4,
    which the setup image has no tool for)."""
    reserved = reservation(config.aux_addresses, subnet)
    if reserved is None:
        why = "no IPv6 address reserved for dmnc's shim (dmnc probes for IPv4 addresses only)"
        return NoShim(network.name, subnet, why, RESERVE_HINT)
    ip_range = config.ip_range if isinstance(config.ip_range, ipaddress.IPv6Network) else None
    route = subnet if ip_range is None else ip_range
    return Shim(network.name, _link_name(network, index), kind, network.parent, (reserved,), route, probe=False)


def _link_name(network: Network, index: int) -> str:
    return f"{SHIM_LINK_PREFIX}{network.id[:_ID_DIGITS]}{index}"


def _pool_shim(
    network: Network, kind: ShimKind, index: int, subnet: ipaddress.IPv4Network, config: IpamConfig
) -> Shim | NoShim:
    link = _link_name(network, index)
    ip_range = config.ip_range if isinstance(config.ip_range, ipaddress.IPv4Network) else None
    reserved = reservation(config.aux_addresses, subnet)
    if reserved is not None:
        route = subnet if ip_range is None else ip_range
        return Shim(network.name, link, kind, network.parent, (reserved,), route, probe=False)
    if not kind.probes:
        why = f"no address reserved for dmnc's shim (an {kind.value} link answers no ARP probe)"
        return NoShim(network.name, subnet, why, RESERVE_HINT)
    if ip_range is None:
        return NoShim(network.name, subnet, "no address reserved for dmnc's shim", f"{RESERVE_HINT}; {WHY_NOT_PICKED}")
    candidates = probe_candidates(subnet, ip_range, config)
    if not candidates:
        return NoShim(network.name, subnet, f"no free address outside --ip-range {ip_range}", RESERVE_HINT)
    return Shim(network.name, link, kind, network.parent, candidates, ip_range, probe=True)


@overload
def reservation(
    aux_addresses: Mapping[str, ipaddress.IPv4Address | ipaddress.IPv6Address], subnet: ipaddress.IPv4Network
) -> ipaddress.IPv4Address | None: ...


@overload
def reservation(
    aux_addresses: Mapping[str, ipaddress.IPv4Address | ipaddress.IPv6Address], subnet: ipaddress.IPv6Network
) -> ipaddress.IPv6Address | None: ...


def reservation(
    aux_addresses: Mapping[str, ipaddress.IPv4Address | ipaddress.IPv6Address],
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The `dmnc` (else `host`) aux-address, when it lies inside `subnet` (so of its IP version)."""
    for name in RESERVATION_NAMES:
        address = aux_addresses.get(name)
        if address is not None and address.version == subnet.version and address in subnet:
            return address
    return None


def probe_candidates(
    subnet: ipaddress.IPv4Network, ip_range: ipaddress.IPv4Network, config: IpamConfig
) -> tuple[ipaddress.IPv4Address, ...]:
    """Up to MAX_PROBE_CANDIDATES addresses of `subnet` outside `ip_range`, from the top down, that are none of:
    the subnet's first and last address (network and broadcast), the one below the last (the usual router or
    host.docker.internal spot), the gateway, any aux-address."""
    taken = {config.gateway, *config.aux_addresses.values()}
    last = int(subnet.broadcast_address)
    lowest = int(subnet.network_address) + 1
    found: list[ipaddress.IPv4Address] = []
    value = last - 2
    while value >= lowest and len(found) < MAX_PROBE_CANDIDATES:
        address = ipaddress.IPv4Address(value)
        if address in ip_range:
            value = int(ip_range.network_address) - 1
            continue
        if address not in taken:
            found.append(address)
        value -= 1
    return tuple(found)
