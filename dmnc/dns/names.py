"""The name table: which name under the domain has which addresses, built from Docker's running containers.

Three forms of name, relative to the domain:

| name                   | addresses                                                             |
|------------------------|-----------------------------------------------------------------------|
| `<container>`          | every address of the container                                        |
| `<container>.<network>`| the container's address(es) on that network                           |
| `<service>.<project>`  | every address of every running container of that Compose service     |

**Precedence.** `<container>.<network>` and `<service>.<project>` have the same shape. When a name fits both (a
network named like a Compose project, e.g. `docker network create shop` and a project `shop` with a container named
`api`), the container-on-network meaning wins: it names one exact endpoint the user asked Docker for, while the
Compose meaning is derived from labels. The Compose meaning answers only names the first form does not have.
Where one name maps to several containers (two containers of one service, or two container names that normalise to
the same label), the answer carries all their addresses, as Docker's embedded DNS does.

**Labels.** Matching is case-insensitive (RFC 4343). Docker allows `[a-zA-Z0-9][a-zA-Z0-9_.-]*` in container names;
host names allow only letters, digits and `-` (RFC 952, RFC 1123 section 2.1). So every `_` and `.` of a container,
network, project or service name becomes `-` (`my_app.v2` -> `my-app-v2`: always one label), and a query's labels
get the same treatment, so `my_app`, `MY-APP` and `my-app` all find `my_app`. A name longer than one label may be
(63 octets, RFC 1035 section 2.3.4) or with characters outside that set after the mapping gets no DNS name.

**Reachable addresses only.** An address is in the table only if it lies in a subnet dmnc routes through the tunnel,
and IPv6 addresses only while the tunnel carries IPv6.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Labels = tuple[bytes, ...]
"""A name relative to the domain, normalised, most specific label first (`(b"web", b"frontend")`)."""

# Compose's own labels (https://docs.docker.com/compose/how-tos/project-name/ and compose-spec's label list).
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
# RFC 1035 section 2.3.4: a label is at most 63 octets.
MAX_LABEL_OCTETS = 63
_HOST_LABEL = re.compile(rb"[a-z0-9-]+")
_TO_HYPHEN = bytes.maketrans(b"_.", b"--")


def normalize_label(label: bytes) -> bytes:
    """The form names are stored and looked up in: ASCII lower case, `_` and `.` as `-`."""
    return label.lower().translate(_TO_HYPHEN)


def name_label(name: str) -> bytes | None:
    """The DNS label for a Docker container/network/project/service name, or None when it cannot have one."""
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        return None
    label = normalize_label(raw)
    if not label or len(label) > MAX_LABEL_OCTETS or _HOST_LABEL.fullmatch(label) is None:
        return None
    return label


@dataclass(frozen=True)
class ContainerEndpoints:
    """One running container as the name table needs it: its name, labels, and addresses per network name."""

    id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    networks: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Reachability:
    """Which addresses the host can reach through the tunnel: the routed subnets, and whether IPv6 is carried."""

    routed: frozenset[IPNetwork]
    ipv6: bool

    def allows(self, address: IPAddress) -> bool:
        if address.version == 6 and not self.ipv6:
            return False
        return any(address.version == subnet.version and address in subnet for subnet in self.routed)


@dataclass(frozen=True)
class NameTable:
    """Names relative to the domain -> addresses (sorted, no repeats). `parents` holds every proper ancestor of a
    name that has addresses: such a name exists (empty non-terminal) and gets NODATA, not NXDOMAIN (RFC 8020)."""

    records: Mapping[Labels, tuple[IPAddress, ...]] = field(default_factory=dict)
    parents: frozenset[Labels] = frozenset()

    def lookup(self, labels: Labels) -> tuple[IPAddress, ...] | None:
        """The addresses of a name (labels as the query has them), () for a name that exists without addresses,
        None for a name that does not exist."""
        key = tuple(normalize_label(label) for label in labels)
        found = self.records.get(key)
        if found is not None:
            return found
        if key in self.parents or not key:
            return ()
        return None

    def __len__(self) -> int:
        return len(self.records)


def build_table(containers: Iterable[ContainerEndpoints], reachable: Reachability) -> NameTable:
    """The table for these running containers; see the module docstring for the forms and their precedence."""
    by_container: dict[Labels, set[IPAddress]] = {}
    by_network: dict[Labels, set[IPAddress]] = {}
    by_service: dict[Labels, set[IPAddress]] = {}
    for container in containers:
        label = name_label(container.name)
        every: set[IPAddress] = set()
        for network, addresses in container.networks.items():
            usable = {address for address in addresses if reachable.allows(address)}
            every |= usable
            network_label = name_label(network)
            if label is not None and network_label is not None and usable:
                by_network.setdefault((label, network_label), set()).update(usable)
        if not every:
            continue
        if label is not None:
            by_container.setdefault((label,), set()).update(every)
        service = _compose_service(container.labels)
        if service is not None:
            by_service.setdefault(service, set()).update(every)
    records: dict[Labels, set[IPAddress]] = {}
    # Lowest precedence first, so each later form replaces a colliding name (see the module docstring).
    for form in (by_service, by_network, by_container):
        records.update(form)
    return NameTable(
        records={name: _ordered(addresses) for name, addresses in records.items()},
        parents=frozenset(name[index:] for name in records for index in range(1, len(name))),
    )


def _compose_service(labels: Mapping[str, str]) -> Labels | None:
    project = labels.get(COMPOSE_PROJECT_LABEL)
    service = labels.get(COMPOSE_SERVICE_LABEL)
    if project is None or service is None:
        return None
    project_label, service_label = name_label(project), name_label(service)
    if project_label is None or service_label is None:
        return None
    return (service_label, project_label)


def _ordered(addresses: Collection[IPAddress]) -> tuple[IPAddress, ...]:
    return tuple(sorted(addresses, key=lambda address: (address.version, address)))
