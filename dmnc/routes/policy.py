"""Which Docker networks get a host route: a pure function of the networks, the configuration, the routes that
other programs own and the host's own addresses. No I/O, no clock.

dmnc installs routes as root on orders from whoever can create a Docker network, so the rules are strict. In
order, per network and then per subnet:
- only local-scope networks (swarm/global scope networks do not live in the VM's kernel the same way);
- never the `host` or `none` (driver `null`) networks: they have no subnet of their own to reach;
- the label `dmnc.route=false` (case-insensitive) opts a network out;
- a network whose IPAM config the daemon described wrongly (a malformed subnet) is a skip with the reason, never a
  route and never an exception; so is a network without a subnet (no IPAM config);
- internal networks are included: the VM side masquerades the host's tunnel address, so they need no way out;
- include patterns, when given, must match the network name (glob) or contain the subnet (CIDR);
- exclude patterns win: a name glob match, or a CIDR that overlaps the subnet;
- the never-list, whatever the options: prefixes too wide to be a container network, the special-purpose ranges
  (loopback, link-local, multicast, ...), the tunnel's own addresses and the host's own traffic (the addresses and
  connected subnets of its other interfaces, the VM's UDP endpoint, its DNS servers). Overlap in either
  direction refuses the subnet whole;
- a macvlan/ipvlan subnet only when the VM has a shim to reach it (dmnc.vm.shims: its containers are out of the
  VM's own reach otherwise);
- IPv6 subnets only while the VM has IPv6 (its setup reports `ipv6=on|off`): with it off the tunnel is IPv4-only;
  until the setup has said, no new IPv6 route is added (and none is withdrawn), so a VM without IPv6 never sees
  one come and go;
- only private ranges, unless `--route-allow` admits more;
- a subnet that overlaps a route dmnc does not own (a LAN, a VPN) is skipped, naming both routes, unless
  `--route-over` covers it (or the deprecated `--force-routes`). Routes of prefix length 0 or 1 are default routes
  (a full-tunnel VPN installs 0.0.0.0/1 + 128.0.0.0/1 and ::/1 + 8000::/1), not overlaps. A subnet dmnc routed
  already stays routed beside a wider route that appears later (the longest prefix still wins), but yields to an
  equal or more specific one: that program (a VPN) decided where that traffic goes;
- at most MAX_ROUTES routes; networks beyond are skipped (sorted by name, so the same ones each time).

Every decision that leaves a subnet out carries the rule, the detail and the fix (the option that would change it,
or why none does).
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dmnc.routes.manager import Address, Destination, InstalledRoute

OPT_OUT_LABEL = "dmnc.route"
OPT_OUT_VALUE = "false"
LOCAL_SCOPE = "local"
# Docker's built-in networks without a subnet to route: `host` (driver host) and `none` (driver null).
UNROUTABLE_DRIVERS = frozenset({"host", "null"})

# Far more networks than one Docker host runs; a bound on what a flood of `docker network create` can make dmnc do.
MAX_ROUTES = 1024

_net = ipaddress.ip_network

# Routed by default: the private ranges, and the documentation ranges that Docker's own documentation uses in
# its network examples.
PRIVATE_RANGES: tuple[tuple[Destination, str], ...] = (
    (_net("10.0.0.0/8"), "RFC 1918 private"),
    (_net("172.16.0.0/12"), "RFC 1918 private"),
    (_net("192.168.0.0/16"), "RFC 1918 private"),
    (_net("fc00::/7"), "RFC 4193 unique local"),
    (_net("2001:db8::/32"), "RFC 3849 documentation"),
    (_net("192.0.2.0/24"), "RFC 5737 TEST-NET-1"),
    (_net("198.51.100.0/24"), "RFC 5737 TEST-NET-2"),
    (_net("203.0.113.0/24"), "RFC 5737 TEST-NET-3"),
)
UNIQUE_LOCAL = _net("fc00::/7")

# Never routed, whatever the options: RFC 6890 section 2.2 and the IANA IPv4/IPv6 Special-Purpose Address
# Registries. A subnet overlapping any of them in either direction is refused whole.
NEVER_RANGES: tuple[tuple[Destination, str], ...] = (
    (_net("0.0.0.0/8"), "'this network', the unspecified address (RFC 6890)"),
    (_net("127.0.0.0/8"), "loopback (RFC 6890)"),
    (_net("169.254.0.0/16"), "link-local (RFC 3927)"),
    (_net("224.0.0.0/4"), "multicast (RFC 5771)"),
    (_net("240.0.0.0/4"), "reserved, with the limited broadcast 255.255.255.255 (RFC 6890, RFC 919)"),
    (_net("::/128"), "the unspecified address (RFC 4291)"),
    (_net("::1/128"), "loopback (RFC 4291)"),
    (_net("fe80::/10"), "link-local (RFC 4291)"),
    (_net("ff00::/8"), "multicast (RFC 4291)"),
    (_net("::ffff:0:0/96"), "IPv4-mapped addresses (RFC 4291)"),
    (_net("64:ff9b::/96"), "NAT64, where every IPv4-literal connection goes on a NAT64 network (RFC 6052)"),
    (_net("2002::/16"), "6to4 (RFC 3056)"),
    (_net("2001::/32"), "Teredo (RFC 4380)"),
)
# Shorter prefixes are not container networks but a share of the Internet.
MIN_IPV4_PREFIX = 8
MIN_IPV6_PREFIX = 16  # outside fc00::/7, which is private as a whole
# Routes this short are default routes: full-tunnel VPNs (wg-quick, OpenVPN's def1) split 0/0 into two /1s so
# that they win over the default route without replacing it.
MAX_DEFAULT_ROUTE_PREFIX = 1


class NetworkLike(Protocol):
    """Any description of a Docker network with these attributes (dmnc.docker.models.Network is one)."""

    @property
    def name(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def driver(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def internal(self) -> bool: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def subnets(self) -> tuple[Destination, ...]: ...
    @property
    def malformed(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    """What the policy needs to know about one Docker network (filled from the Engine API's Network object)."""

    name: str
    id: str
    driver: str
    scope: str
    internal: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    subnets: tuple[Destination, ...] = ()
    malformed: str | None = None  # why its IPAM config could not be read
    no_shim: Mapping[Destination, tuple[str, str]] = field(default_factory=dict)
    """Subnets of a macvlan/ipvlan network the VM cannot reach because it has no shim there (dmnc.vm.shims):
    subnet -> (why, how to get one). A route to them would carry packets into the VM for nothing."""

    @classmethod
    def of(cls, network: NetworkLike) -> NetworkInfo:
        """Copy what routes need from a Docker client's network model, without this layer importing it."""
        return cls(
            name=network.name,
            id=network.id,
            driver=network.driver,
            scope=network.scope,
            internal=network.internal,
            labels=dict(network.labels),
            subnets=tuple(network.subnets),
            malformed=network.malformed,
        )


class PolicyConfigError(ValueError):
    """An include/exclude pattern that is neither a name glob nor a valid CIDR, or an invalid allow/over CIDR."""


@dataclass(frozen=True, slots=True)
class NamePattern:
    glob: str

    def __str__(self) -> str:
        return self.glob


@dataclass(frozen=True, slots=True)
class CidrPattern:
    network: Destination

    def __str__(self) -> str:
        return str(self.network)


Pattern = NamePattern | CidrPattern


def parse_pattern(text: str) -> Pattern:
    """A CIDR when it contains '/' (Docker network names cannot), otherwise a name glob (fnmatch syntax)."""
    text = text.strip()
    if not text:
        raise PolicyConfigError("empty network pattern")
    if "/" in text:
        return CidrPattern(parse_cidr(text, "network pattern"))
    return NamePattern(text)


def parse_cidr(text: str, what: str = "network") -> Destination:
    """A network in CIDR notation, host bits zero (`10.1.0.0/16`, `fd00::/8`); `what` names it in the error."""
    text = text.strip()
    try:
        return ipaddress.ip_network(text)
    except ValueError as error:
        raise PolicyConfigError(f"{what} {text!r} is not a valid CIDR: {error}") from error


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    include: tuple[Pattern, ...] = ()
    exclude: tuple[Pattern, ...] = ()
    # Deprecated spelling of "--route-over every overlap"; never touches `allow` or the never-list.
    force: bool = False
    allow: tuple[Destination, ...] = ()  # --route-allow: ranges routed besides PRIVATE_RANGES
    over: tuple[Destination, ...] = ()  # --route-over: subnets routed (and kept) over routes of other programs

    @classmethod
    def from_strings(
        cls,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        force: bool = False,
        allow: Iterable[str] = (),
        over: Iterable[str] = (),
    ) -> PolicyConfig:
        return cls(
            include=tuple(parse_pattern(text) for text in include),
            exclude=tuple(parse_pattern(text) for text in exclude),
            force=force,
            allow=tuple(parse_cidr(text) for text in allow),
            over=tuple(parse_cidr(text) for text in over),
        )


FORCE_ROUTES_DEPRECATION = (
    "--force-routes (routes.force) is deprecated: it routes over every overlapping route of other programs; "
    "name the subnets with --route-over CIDR instead. It does not route public ranges (--route-allow) and never "
    "overrides the never-list"
)


def force_routes_warning(config: PolicyConfig) -> str | None:
    """The deprecation warning to log (once) when `config` uses --force-routes."""
    return FORCE_ROUTES_DEPRECATION if config.force else None


@dataclass(frozen=True, slots=True)
class HostNetwork:
    """An address or connected subnet of one of the host's interfaces other than the tunnel (an address is a
    /32 or /128)."""

    interface: str
    network: Destination


class VmIpv6(enum.Enum):
    """Whether the VM's end of the tunnel carries IPv6, as the VM setup reports it (`ipv6=on|off`)."""

    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"  # no setup result yet


@dataclass(frozen=True, slots=True)
class HostState:
    """The host's own traffic, which no container route may capture, and what the tunnel carries. Gathered by
    `dmnc.routes.hoststate`."""

    tunnel: tuple[Destination, ...] = ()  # the tunnel's own addresses and subnets
    networks: tuple[HostNetwork, ...] = ()
    vm_endpoint: Address | None = None  # where the VM's UDP packets come from
    dns_servers: tuple[Address, ...] = ()
    # OFF once the VM setup reported `ipv6=off`: the tunnel is IPv4-only and nothing in the VM answers an IPv6
    # packet. The service starts at UNKNOWN; ON by default for whoever evaluates without a VM (doctor's checks).
    vm_ipv6: VmIpv6 = VmIpv6.ON


class SkipReason(enum.Enum):
    """The rule that left a subnet out. The value is the short text status and doctor show."""

    NOT_LOCAL_SCOPE = "not a local-scope network"
    UNROUTABLE_DRIVER = "host/none network"
    MALFORMED = "malformed IPAM config"
    NO_SUBNETS = "no IPAM subnet"
    OPTED_OUT = f"label {OPT_OUT_LABEL}={OPT_OUT_VALUE}"
    NOT_INCLUDED = "matches no include pattern"
    EXCLUDED = "matches an exclude pattern"
    TOO_WIDE = "prefix too short"
    SPECIAL_PURPOSE = "special-purpose range"
    TUNNEL = "the tunnel's own addresses"
    HOST_NETWORK = "this host's own network"
    ON_HOST_LAN = "reachable directly on your LAN"
    VM_ENDPOINT = "the VM's UDP endpoint"
    DNS_SERVER = "this host's DNS server"
    VM_NO_IPV6 = "the Docker VM has IPv6 disabled"
    VM_IPV6_UNKNOWN = "waiting for the VM setup to say whether the VM has IPv6"
    NO_SHIM = "a macvlan/ipvlan network the VM cannot reach"
    NOT_PRIVATE = "not a private range"
    OVERLAP = "overlaps a route dmnc does not own"
    TAKEN = "yielded to a route of another program"
    TOO_MANY = f"more than {MAX_ROUTES} routes"

    @property
    def decision(self) -> str:
        """The machine-readable name `status --json` gives this rule: NOT_PRIVATE -> "not-private"."""
        return self.name.lower().replace("_", "-")


# Rules dmnc 0.1 did not have: a subnet they leave out was routed before (the upgrade note names them).
NEW_RULES = frozenset(
    {
        SkipReason.TOO_WIDE,
        SkipReason.SPECIAL_PURPOSE,
        SkipReason.TUNNEL,
        SkipReason.HOST_NETWORK,
        SkipReason.ON_HOST_LAN,
        SkipReason.VM_ENDPOINT,
        SkipReason.DNS_SERVER,
        SkipReason.NOT_PRIVATE,
        SkipReason.TOO_MANY,
    }
)
# The never-list: no option routes these.
NEVER_RULES = frozenset(
    {
        SkipReason.TOO_WIDE,
        SkipReason.SPECIAL_PURPOSE,
        SkipReason.TUNNEL,
        SkipReason.HOST_NETWORK,
        SkipReason.ON_HOST_LAN,
        SkipReason.VM_ENDPOINT,
        SkipReason.DNS_SERVER,
    }
)
_NO_OPTION = "no option routes it: give the Docker network another subnet"
# Drivers whose containers are hosts of the parent's LAN (Docker docs, "Macvlan network driver", "IPvlan network
# driver"): on the host's own LAN (Colima's bridged mode puts the VM there) the host reaches them without dmnc.
LAN_DRIVERS = frozenset({"macvlan", "ipvlan"})
ON_HOST_LAN_FIX = "nothing to do: this host reaches its containers without dmnc"


@dataclass(frozen=True, slots=True)
class Skipped:
    """A subnet (or a network without one) left out: the rule, what exactly it found, and the fix."""

    network: str
    subnet: Destination | None  # None for a network without subnets
    reason: SkipReason
    detail: str = ""
    fix: str | None = None

    def describe(self) -> str:
        """ "<rule>: <detail>; <fix>", the reason status, doctor and the log show."""
        text = self.reason.value
        if self.detail:
            text += f": {self.detail}"
        if self.fix:
            text += f"; {self.fix}"
        return text


@dataclass(frozen=True, slots=True)
class OverlapFinding:
    """A subnet of a Docker network overlaps a route another program owns."""

    network: str
    subnet: Destination
    other_route: InstalledRoute
    routed: bool  # routed anyway: --route-over, or routed by dmnc before the (wider) other route appeared

    def describe(self) -> str:
        outcome = "routed anyway" if self.routed else f"not routed (use --route-over {self.subnet} to route it anyway)"
        return (
            f"network {self.network!r} subnet {self.subnet} overlaps the route {self.other_route.describe()} "
            f"that dmnc does not own: {outcome}"
        )


@dataclass(frozen=True, slots=True)
class Wanted:
    network: str
    subnet: Destination


@dataclass(frozen=True, slots=True)
class PolicyResult:
    desired: frozenset[Destination]
    skipped: tuple[Skipped, ...]
    overlaps: tuple[OverlapFinding, ...]
    wanted: tuple[Wanted, ...] = ()  # `desired` with the network each subnet belongs to


def _overlaps(first: Destination, second: Destination) -> bool:
    return first.version == second.version and first.overlaps(second)


def _within(subnet: Destination, network: Destination) -> bool:
    return subnet.version == network.version and subnet.subnet_of(network)  # type: ignore[arg-type]


def _contains(subnet: Destination, address: Address) -> bool:
    return subnet.version == address.version and address in subnet


def _matches_include(network: NetworkInfo, subnet: Destination, patterns: Sequence[Pattern]) -> bool:
    """An include by CIDR takes subnets inside it."""
    return _matches(network, subnet, patterns, _within)


def _matches_exclude(network: NetworkInfo, subnet: Destination, patterns: Sequence[Pattern]) -> bool:
    """An exclude by CIDR removes every subnet that overlaps it."""
    return _matches(network, subnet, patterns, _overlaps)


def _matches(
    network: NetworkInfo,
    subnet: Destination,
    patterns: Sequence[Pattern],
    cidr_matches: Callable[[Destination, Destination], bool],
) -> bool:
    for pattern in patterns:
        if isinstance(pattern, NamePattern) and fnmatch.fnmatchcase(network.name, pattern.glob):
            return True
        if isinstance(pattern, CidrPattern) and cidr_matches(subnet, pattern.network):
            return True
    return False


def _network_skip_reason(network: NetworkInfo) -> SkipReason | None:
    if network.scope != LOCAL_SCOPE:
        return SkipReason.NOT_LOCAL_SCOPE
    if network.driver in UNROUTABLE_DRIVERS:
        return SkipReason.UNROUTABLE_DRIVER
    if network.labels.get(OPT_OUT_LABEL, "").strip().lower() == OPT_OUT_VALUE:
        return SkipReason.OPTED_OUT
    if network.malformed is not None:
        return SkipReason.MALFORMED
    if not network.subnets:
        return SkipReason.NO_SUBNETS
    return None


_NETWORK_FIXES = {
    SkipReason.NOT_LOCAL_SCOPE: "swarm and global networks are not routed",
    SkipReason.UNROUTABLE_DRIVER: "these networks have no subnet of their own",
    SkipReason.OPTED_OUT: f"remove the label {OPT_OUT_LABEL}={OPT_OUT_VALUE} to route it",
    SkipReason.MALFORMED: "recreate the network with a valid subnet to route it",
    SkipReason.NO_SUBNETS: "give the network an IPAM subnet to route it",
}


def is_too_wide(subnet: Destination) -> bool:
    """Shorter than /8 (IPv4), or than /16 (IPv6 outside fc00::/7)."""
    if subnet.version == 4:
        return subnet.prefixlen < MIN_IPV4_PREFIX
    return subnet.prefixlen < MIN_IPV6_PREFIX and not _within(subnet, UNIQUE_LOCAL)


def never_rule(subnet: Destination, host: HostState) -> tuple[SkipReason, str] | None:
    """The never-list rule `subnet` breaks, with what it found; None when it breaks none."""
    return next(_never_hits(subnet, host), None)


def _never_hits(subnet: Destination, host: HostState) -> Iterator[tuple[SkipReason, str]]:
    if is_too_wide(subnet):
        shortest = MIN_IPV4_PREFIX if subnet.version == 4 else MIN_IPV6_PREFIX
        yield SkipReason.TOO_WIDE, f"a /{subnet.prefixlen} is wider than any container network (at least /{shortest})"
    for special, what in NEVER_RANGES:
        if _overlaps(subnet, special):
            yield SkipReason.SPECIAL_PURPOSE, f"overlaps {special}, {what}"
    for own in host.tunnel:
        if _overlaps(subnet, own):
            yield SkipReason.TUNNEL, f"overlaps {own}, the tunnel's own addresses"
    for host_network in host.networks:
        if _overlaps(subnet, host_network.network):
            yield SkipReason.HOST_NETWORK, f"overlaps {host_network.network} on {host_network.interface}"
    if host.vm_endpoint is not None and _contains(subnet, host.vm_endpoint):
        yield SkipReason.VM_ENDPOINT, f"contains {host.vm_endpoint}: the tunnel's packets would loop into itself"
    for server in host.dns_servers:
        if _contains(subnet, server):
            yield SkipReason.DNS_SERVER, f"contains the DNS server {server}"


def is_private(subnet: Destination, allow: Sequence[Destination] = ()) -> bool:
    return any(_within(subnet, private) for private, _ in PRIVATE_RANGES) or any(
        _within(subnet, allowed) for allowed in allow
    )


def is_default_route(route: InstalledRoute) -> bool:
    return route.destination.prefixlen <= MAX_DEFAULT_ROUTE_PREFIX


def _taker(subnet: Destination, clashes: Sequence[InstalledRoute]) -> InstalledRoute | None:
    """The first other route equal to or more specific than `subnet`: one that took (part of) its traffic."""
    return next((route for route in clashes if _within(route.destination, subnet)), None)


def describe_taker(route: InstalledRoute) -> str:
    return f"{route.destination} via {route.interface}"


def evaluate(
    networks: Iterable[NetworkInfo],
    config: PolicyConfig,
    other_routes: Iterable[InstalledRoute] = (),
    already_routed: Collection[Destination] = (),
    host: HostState = HostState(),  # frozen, so one shared default is safe
) -> PolicyResult:
    """The subnets to route, what was skipped and why, and every overlap with `other_routes` (routes dmnc does not
    own; default routes, /0 and /1, are ignored)."""
    conflicting = [route for route in other_routes if not is_default_route(route) and not route.ours]
    desired: set[Destination] = set()
    wanted: list[Wanted] = []
    skipped: list[Skipped] = []
    overlaps: list[OverlapFinding] = []
    for network in sorted(networks, key=lambda n: (n.name, n.id)):
        reason = _network_skip_reason(network)
        if reason is not None:
            subnets: tuple[Destination | None, ...] = network.subnets or (None,)
            fix = _NETWORK_FIXES[reason]
            detail = network.malformed if reason is SkipReason.MALFORMED and network.malformed else ""
            skipped.extend(Skipped(network.name, subnet, reason, detail, fix) for subnet in subnets)
            continue
        for subnet in network.subnets:
            skip = _subnet_skip(network, subnet, config, host) or _vm_ipv6_pending(
                network, subnet, host, already_routed
            )
            if skip is None:
                clashes = [route for route in conflicting if _overlaps(subnet, route.destination)]
                over = config.force or any(_within(subnet, cidr) for cidr in config.over)
                taker = _taker(subnet, clashes)
                routed = over or (subnet in already_routed and taker is None)
                overlaps.extend(OverlapFinding(network.name, subnet, route, routed) for route in clashes)
                if clashes and not routed:
                    skip = _overlap_skip(network.name, subnet, clashes, taker if subnet in already_routed else None)
            if skip is None and len(desired) >= MAX_ROUTES and subnet not in desired:
                skip = Skipped(
                    network.name,
                    subnet,
                    SkipReason.TOO_MANY,
                    "networks are routed in name order",
                    "route fewer networks with --route-include or --route-exclude",
                )
            if skip is not None:
                skipped.append(skip)
                continue
            desired.add(subnet)
            wanted.append(Wanted(network.name, subnet))
    return PolicyResult(frozenset(desired), tuple(skipped), tuple(overlaps), tuple(wanted))


# No host route for such a subnet: its packets would enter the tunnel and be dropped in the VM. The VM side takes
# chip0's disable_ipv6, which a new interface copies from conf/default (Linux Documentation/networking/
# ip-sysctl.rst, disable_ipv6); a kernel booted with ipv6.disable=1 has no IPv6 to turn on.
VM_NO_IPV6_DETAIL = "the tunnel carries IPv4 only, so nothing in the VM could answer"
VM_NO_IPV6_FIX = (
    "enable IPv6 in the VM (sysctl net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0, or boot"
    " it without ipv6.disable=1), then restart dmnc to set the VM side up again"
)


def _subnet_skip(network: NetworkInfo, subnet: Destination, config: PolicyConfig, host: HostState) -> Skipped | None:
    """The first rule before the overlap check that leaves `subnet` out."""
    if config.include and not _matches_include(network, subnet, config.include):
        return Skipped(network.name, subnet, SkipReason.NOT_INCLUDED, fix="add it with --route-include")
    if _matches_exclude(network, subnet, config.exclude):
        return Skipped(network.name, subnet, SkipReason.EXCLUDED, fix="remove the matching --route-exclude")
    if never := never_rule(subnet, host):
        return _never_skip(network, subnet, *never)
    if unreachable := _unreachable_in_vm(network, subnet, host):
        return unreachable
    if not is_private(subnet, config.allow):
        detail = "outside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7 and the documentation ranges"
        return Skipped(network.name, subnet, SkipReason.NOT_PRIVATE, detail, f"allow it with --route-allow {subnet}")
    return None


def _never_skip(network: NetworkInfo, subnet: Destination, rule: SkipReason, detail: str) -> Skipped:
    if rule is SkipReason.HOST_NETWORK and network.driver in LAN_DRIVERS:
        return Skipped(network.name, subnet, SkipReason.ON_HOST_LAN, detail, ON_HOST_LAN_FIX)
    return Skipped(network.name, subnet, rule, detail, _NO_OPTION)


def _unreachable_in_vm(network: NetworkInfo, subnet: Destination, host: HostState) -> Skipped | None:
    """Nothing in the VM could deliver to `subnet`: a macvlan/ipvlan subnet without a shim, IPv6 with the VM's off."""
    if no_shim := network.no_shim.get(subnet):
        detail, fix = no_shim
        return Skipped(network.name, subnet, SkipReason.NO_SHIM, detail, fix)
    if subnet.version == 6 and host.vm_ipv6 is VmIpv6.OFF:
        return Skipped(network.name, subnet, SkipReason.VM_NO_IPV6, VM_NO_IPV6_DETAIL, VM_NO_IPV6_FIX)
    return None


def _vm_ipv6_pending(
    network: NetworkInfo, subnet: Destination, host: HostState, already_routed: Collection[Destination]
) -> Skipped | None:
    """A new IPv6 route waits while the VM's IPv6 is unknown: a VM without it would see the route withdrawn a
    moment later. One already installed stays until the VM says."""
    if subnet.version == 6 and host.vm_ipv6 is VmIpv6.UNKNOWN and subnet not in already_routed:
        return Skipped(network.name, subnet, SkipReason.VM_IPV6_UNKNOWN, fix="none needed: decided once it is set up")
    return None


def _overlap_skip(
    network: str, subnet: Destination, clashes: Sequence[InstalledRoute], taker: InstalledRoute | None
) -> Skipped:
    fix = f"keep it with --route-over {subnet}" if taker else f"route it anyway with --route-over {subnet}"
    if taker is not None:
        return Skipped(network, subnet, SkipReason.TAKEN, f"taken by {describe_taker(taker)}", fix)
    return Skipped(network, subnet, SkipReason.OVERLAP, f"overlaps {clashes[0].describe()}", fix)
