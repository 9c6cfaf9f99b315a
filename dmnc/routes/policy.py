"""Which Docker networks get a host route: a pure function of the networks, the configuration and the routes that
other programs own.

Rules, in order, per network and then per subnet:
- only local-scope networks (swarm/global scope networks do not live in the VM's kernel the same way);
- never the `host` or `none` (driver `null`) networks: they have no subnet of their own to reach;
- the label `dmnc.route=false` (case-insensitive) opts a network out;
- internal networks are included: the VM side masquerades the host's tunnel address, so they need no way out;
- include patterns, when given, must match the network name (glob) or contain the subnet (CIDR);
- exclude patterns win: a name glob match, or a CIDR that overlaps the subnet;
- a subnet that overlaps a route dmnc does not own (a LAN, a VPN) is reported naming both routes and skipped,
  unless `force`. A subnet dmnc has routed already stays routed (the finding is still reported): a VPN that
  connects later must not make containers unreachable, and a route of ours replaced by another is put back.
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dmnc.routes.manager import Destination, InstalledRoute

OPT_OUT_LABEL = "dmnc.route"
OPT_OUT_VALUE = "false"
LOCAL_SCOPE = "local"
# Docker's built-in networks without a subnet to route: `host` (driver host) and `none` (driver null).
UNROUTABLE_DRIVERS = frozenset({"host", "null"})


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
        )


class PolicyConfigError(ValueError):
    """An include/exclude pattern that is neither a name glob nor a valid CIDR."""


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
        try:
            return CidrPattern(ipaddress.ip_network(text))
        except ValueError as error:
            raise PolicyConfigError(f"network pattern {text!r} is not a valid CIDR: {error}") from error
    return NamePattern(text)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    include: tuple[Pattern, ...] = ()
    exclude: tuple[Pattern, ...] = ()
    force: bool = False  # --force-routes: route subnets that overlap routes dmnc does not own

    @classmethod
    def from_strings(
        cls, include: Iterable[str] = (), exclude: Iterable[str] = (), force: bool = False
    ) -> PolicyConfig:
        return cls(
            include=tuple(parse_pattern(text) for text in include),
            exclude=tuple(parse_pattern(text) for text in exclude),
            force=force,
        )


class SkipReason(enum.Enum):
    NOT_LOCAL_SCOPE = "not a local-scope network"
    UNROUTABLE_DRIVER = "host/none network"
    NO_SUBNETS = "no IPAM subnet"
    OPTED_OUT = f"label {OPT_OUT_LABEL}={OPT_OUT_VALUE}"
    NOT_INCLUDED = "matches no include pattern"
    EXCLUDED = "matches an exclude pattern"
    OVERLAP = "overlaps a route dmnc does not own"


@dataclass(frozen=True, slots=True)
class Skipped:
    network: str
    subnet: Destination | None  # None for a network without subnets
    reason: SkipReason


@dataclass(frozen=True, slots=True)
class OverlapFinding:
    """A subnet of a Docker network overlaps a route another program owns."""

    network: str
    subnet: Destination
    other_route: InstalledRoute
    routed: bool  # routed anyway: forced, or already routed by dmnc before the other route appeared

    def describe(self) -> str:
        outcome = "routed anyway" if self.routed else "not routed (use --force-routes to route it anyway)"
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


def _matches_include(network: NetworkInfo, subnet: Destination, patterns: Sequence[Pattern]) -> bool:
    for pattern in patterns:
        if isinstance(pattern, NamePattern) and fnmatch.fnmatchcase(network.name, pattern.glob):
            return True
        if isinstance(pattern, CidrPattern) and _within(subnet, pattern.network):
            return True
    return False


def _matches_exclude(network: NetworkInfo, subnet: Destination, patterns: Sequence[Pattern]) -> bool:
    for pattern in patterns:
        if isinstance(pattern, NamePattern) and fnmatch.fnmatchcase(network.name, pattern.glob):
            return True
        if isinstance(pattern, CidrPattern) and _overlaps(subnet, pattern.network):
            return True
    return False


def _network_skip_reason(network: NetworkInfo) -> SkipReason | None:
    if network.scope != LOCAL_SCOPE:
        return SkipReason.NOT_LOCAL_SCOPE
    if network.driver in UNROUTABLE_DRIVERS:
        return SkipReason.UNROUTABLE_DRIVER
    if network.labels.get(OPT_OUT_LABEL, "").strip().lower() == OPT_OUT_VALUE:
        return SkipReason.OPTED_OUT
    if not network.subnets:
        return SkipReason.NO_SUBNETS
    return None


def evaluate(
    networks: Iterable[NetworkInfo],
    config: PolicyConfig,
    other_routes: Iterable[InstalledRoute] = (),
    already_routed: Collection[Destination] = (),
) -> PolicyResult:
    """The subnets to route, what was skipped and why, and every overlap with `other_routes` (routes dmnc does not
    own; default routes, /0, overlap everything and are ignored)."""
    conflicting = [route for route in other_routes if route.destination.prefixlen > 0 and not route.ours]
    desired: set[Destination] = set()
    wanted: list[Wanted] = []
    skipped: list[Skipped] = []
    overlaps: list[OverlapFinding] = []
    for network in sorted(networks, key=lambda n: (n.name, n.id)):
        reason = _network_skip_reason(network)
        if reason is not None:
            subnets: tuple[Destination | None, ...] = network.subnets or (None,)
            skipped.extend(Skipped(network.name, subnet, reason) for subnet in subnets)
            continue
        for subnet in network.subnets:
            if config.include and not _matches_include(network, subnet, config.include):
                skipped.append(Skipped(network.name, subnet, SkipReason.NOT_INCLUDED))
                continue
            if _matches_exclude(network, subnet, config.exclude):
                skipped.append(Skipped(network.name, subnet, SkipReason.EXCLUDED))
                continue
            routed = config.force or subnet in already_routed
            clashes = [route for route in conflicting if _overlaps(subnet, route.destination)]
            overlaps.extend(OverlapFinding(network.name, subnet, route, routed) for route in clashes)
            if clashes and not routed:
                skipped.append(Skipped(network.name, subnet, SkipReason.OVERLAP))
                continue
            desired.add(subnet)
            wanted.append(Wanted(network.name, subnet))
    return PolicyResult(frozenset(desired), tuple(skipped), tuple(overlaps), tuple(wanted))
