"""What `dmnc status` shows: the typed status snapshot and the events of the live feed, with their JSON form.

The JSON of a snapshot (one object, `dmnc status --json`) is a contract users and tests rely on:

    {"schema": 1, "version": "0.1.0",
     "tunnel": {"interface": "utun4", "listen": "0.0.0.0:3333", "last_handshake_age_s": 12.5,
                "endpoint": "192.168.65.3:51820", "rx_bytes": 1024, "tx_bytes": 2048, "drops": {"replayed_counter": 1}},
     "docker": {"host": "unix:///var/run/docker.sock", "runtime": "Docker Desktop", "api_version": "1.41",
                "connected": true},
     "vm": {"mode": "kernel", "public_key": "<base64 of 32 bytes>"},
     "routes": [{"subnet": "172.17.0.0/16", "network": "bridge", "installed": true, "reason": null,
                 "decision": "routed"},
                {"subnet": "8.8.8.0/24", "network": "dns", "installed": false, "decision": "not-private",
                 "reason": "not a private range: outside ...; allow it with --route-allow 8.8.8.0/24"}],
     "dns": {"domain": "dmnc.internal", "port": 53, "addresses": ["10.33.33.1", "fd33:33:33::1"], "records": 4,
             "last_update_age_s": 3.5, "problem": null, "host_resolver": "/etc/resolver/dmnc.internal",
             "drops": {"rate_limited": 0}}}

null means "not known yet" (no handshake so far, Docker not reached, VM not set up); `listen` and `endpoint` are
`HOST:PORT`, an IPv6 host in brackets (`[fd00::1]:51820`); a route's `reason` says why it is not installed (the
rule, what it found and the fix, e.g. it overlaps a VPN route) and its `decision` (schema 2) names the outcome:
"routed", "pending", "install-failed", "given-up", "shadowed", or the policy rule that left it out
(`SkipReason.decision` in dmnc/routes/policy.py: "not-private", "special-purpose", "taken", "overlap",
"vm-no-ipv6" for an IPv6 subnet while the VM has IPv6 disabled, "vm-ipv6-unknown" before its setup said, ...).
`dns` (schema 2) is null with --no-dns; its
`port` is null when no listener could be opened (then `problem` says why), `host_resolver` says how the host's
resolver was pointed at dmnc or why not, `drops` counts queries dropped (rate limits, malformed) and answers that
could not be sent. `standby` (schema 3) is null while dmnc runs its tunnel; as a service that found another program
holding what it needs (docker-mac-net-connect's tunnel address or VM interface), it says what and how to stop it,
and dmnc checks again periodically. `paths` (schema 4) says per address family where container routes go and why:

    "paths": [{"family": "ipv4", "path": "direct", "next_hop": "192.168.106.2", "interface": "bridge100",
               "reason": "the VM answers at 192.168.106.2 via bridge100 (its col0), ...", "problem": false},
              {"family": "ipv6", "path": "tunnel", "next_hop": null, "interface": null,
               "reason": "the VM reported no IPv6 address on a link it shares with the host", "problem": false}]

`path` is "tunnel" or "direct" (then `next_hop` is the VM's address and `interface` the host's on that link);
`problem` is true when `--path direct` was asked for and the family is on the tunnel anyway. An older service
sends no `paths` (read as empty). An event is one object:

    {"schema": 1, "time": 1795000000.25, "kind": "docker.connected",
     "message": "connected to Docker Desktop (API 1.41)", "details": {"api_version": "1.41"}}

`schema` (in the snapshot and in every event, so each message can be read on its own) is the version of this
format, SCHEMA_VERSION; `version` is dmnc's release. The rules that let clients and services of different releases
talk:
- a new schema only adds fields: a field of an older schema keeps its name, type and meaning and stays present. A
  change that breaks this needs new resource paths (`/v2/...`, see `dmnc.control.protocol`), not a schema number;
- so a reader takes a newer schema than it knows leniently: it reads the fields it knows and ignores the others
  (unknown keys are ignored at every level in any schema);
- a message without `schema` is schema 0, the format of dmnc 0.1 (identical to schema 1 but for the `schema` key);
  fields added after 0.1, like a route's `reason`, read as null when absent;
- `schema` must be a non-negative integer; anything else is a malformed message.
A decoded snapshot re-encoded (`dmnc status --json`) is in the reader's own schema: the fields it knows.

Decoding treats the bytes as untrusted: every `*_untrusted` function raises only `StatusFormatError`, naming the
field and what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DetailValue = str | int | float | bool | None

# The version of the JSON format above: bumped whenever a field is added (see the rules in the docstring).
# 1: dmnc 0.1 plus `schema`; 2: routes[].decision and dns; 3: standby; 4: paths.
SCHEMA_VERSION = 4
PATH_FAMILIES = ("ipv4", "ipv6")
PATH_KINDS = ("tunnel", "direct")

# A WireGuard public key is a Curve25519 point, 32 bytes (whitepaper section 5.4), shown in base64 as wg(8) does.
PUBLIC_KEY_BYTES = 32
# "area.what", e.g. "tunnel.handshake", "docker.disconnected", "route.installed".
_EVENT_KIND = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")


class StatusFormatError(ValueError):
    """A snapshot or event in JSON form is malformed; `where` is the dotted path of the offending field."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.where = where
        self.reason = reason


@dataclass(frozen=True)
class TunnelStatus:
    """The host's WireGuard peer. `drops` counts discarded packets by reason, listing only reasons that occurred.

    The reasons are the WireGuard core's `DropReason` members in lower case (dmnc/wireguard/outputs.py), the flow
    filter's `FilterDrop` members in lower case (dmnc/tunnel/flowfilter.py: what the VM may not send the host),
    then the data path's own counters (`TunnelCounters` in dmnc/tunnel/datapath.py); no other names appear:

    too_short, unknown_type, bad_length, invalid_mac1, decrypt_failed, unknown_peer, unknown_receiver_index,
    unexpected_message, invalid_public_key, replayed_counter, stale_timestamp, rate_limited, cookie_required,
    expired_keypair, disallowed_source_ip, no_route_to_peer, no_endpoint, invalid_ip_packet, queue_full,
    handshake_gave_up, key_material_zeroed, roaming_refused, unparsable_packet, multicast_or_broadcast,
    not_to_host_address, router_message, protocol_not_allowed, inbound_not_allowed, fragment_not_matched,
    outbound_multicast, udp_send_failed, udp_receive_errors, tun_write_failed, handshake_queue_full
    """

    interface: str | None = None
    listen: str | None = None
    last_handshake_age_s: float | None = None
    endpoint: str | None = None
    rx_bytes: int = 0
    tx_bytes: int = 0
    drops: Mapping[str, int] = field(default_factory=dict)


def format_drops(drops: Mapping[str, int]) -> str:
    """Dropped-packet counts as `dmnc status` and `dmnc doctor` show them: "invalid_mac 2, replay 1", or "none"."""
    shown = [f"{reason} {count}" for reason, count in sorted(drops.items()) if count]
    return ", ".join(shown) if shown else "none"


@dataclass(frozen=True)
class DockerStatus:
    """The Docker Engine dmnc talks to: its socket URL, the runtime behind it (Docker Desktop, Colima...)."""

    host: str | None = None
    runtime: str | None = None
    api_version: str | None = None
    connected: bool = False


@dataclass(frozen=True)
class VmStatus:
    """The VM side of the tunnel: how it was set up ("kernel", "userspace") and its WireGuard public key."""

    mode: str | None = None
    public_key: str | None = None


@dataclass(frozen=True)
class RouteStatus:
    """One Docker network subnet and whether its host route through the tunnel is in place (if not, why not)."""

    subnet: IPNetwork
    network: str
    installed: bool
    reason: str | None = None
    decision: str | None = None  # None from a service of schema 1


@dataclass(frozen=True)
class DnsStatus:
    """The DNS server for container names: its domain, where it listens, how many names it has and since when."""

    domain: str
    port: int | None = None
    addresses: tuple[str, ...] = ()
    records: int = 0
    last_update_age_s: float | None = None
    problem: str | None = None
    host_resolver: str | None = None
    drops: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PathStatus:
    """Where one address family's container routes go: the tunnel, or direct via the VM's address, and why."""

    family: str  # "ipv4" or "ipv6"
    path: str  # "tunnel" or "direct"
    reason: str
    next_hop: str | None = None
    interface: str | None = None
    problem: bool = False


@dataclass(frozen=True)
class StatusSnapshot:
    """The whole service state at one moment, as `dmnc status` shows it."""

    version: str
    tunnel: TunnelStatus = field(default_factory=TunnelStatus)
    docker: DockerStatus = field(default_factory=DockerStatus)
    vm: VmStatus = field(default_factory=VmStatus)
    routes: tuple[RouteStatus, ...] = ()
    dns: DnsStatus | None = None  # schema 2; None with --no-dns or from an older dmnc
    standby: str | None = None  # schema 3; why the service waits instead of running its tunnel
    paths: tuple[PathStatus, ...] = ()  # schema 4; empty from an older dmnc and before the service runs

    def to_json_object(self) -> dict[str, object]:
        tunnel, docker, vm = self.tunnel, self.docker, self.vm
        return {
            "schema": SCHEMA_VERSION,
            "version": self.version,
            "tunnel": {
                "interface": tunnel.interface,
                "listen": tunnel.listen,
                "last_handshake_age_s": tunnel.last_handshake_age_s,
                "endpoint": tunnel.endpoint,
                "rx_bytes": tunnel.rx_bytes,
                "tx_bytes": tunnel.tx_bytes,
                "drops": dict(tunnel.drops),
            },
            "docker": {
                "host": docker.host,
                "runtime": docker.runtime,
                "api_version": docker.api_version,
                "connected": docker.connected,
            },
            "vm": {"mode": vm.mode, "public_key": vm.public_key},
            "routes": [
                {
                    "subnet": str(route.subnet),
                    "network": route.network,
                    "installed": route.installed,
                    "reason": route.reason,
                    "decision": route.decision,
                }
                for route in self.routes
            ],
            "dns": None if self.dns is None else _dns_json(self.dns),
            "standby": self.standby,
            "paths": [_path_json(path) for path in self.paths],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_object(), allow_nan=False)


@dataclass(frozen=True)
class StatusEvent:
    """Something that happened, for the live feed: when (Unix time), what kind, a readable line, details."""

    time: float
    kind: str
    message: str
    details: Mapping[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _EVENT_KIND.fullmatch(self.kind):
            raise ValueError(f"event kind {self.kind!r} is not 'area.what' in lower case")

    def to_json_object(self) -> dict[str, object]:
        return {
            "schema": SCHEMA_VERSION,
            "time": self.time,
            "kind": self.kind,
            "message": self.message,
            "details": dict(self.details),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_object(), allow_nan=False)


# ---------------------------------------------------------------------------------------------------------------------
# Decoding untrusted JSON


def _reject_constant(name: str) -> object:
    raise StatusFormatError("", f"{name} is not a number JSON allows")


def _load_json_untrusted(text: str | bytes) -> object:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except StatusFormatError:
        raise
    except UnicodeDecodeError as error:
        raise StatusFormatError("", f"not UTF-8 ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise StatusFormatError("", f"not JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise StatusFormatError("", "JSON nested too deeply") from None
    except ValueError as error:  # e.g. an integer longer than Python's int parsing limit
        raise StatusFormatError("", f"unreadable JSON value ({error})") from None


def _describe(value: object) -> str:
    if value is None:
        return "null"
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }
    return names.get(type(value), type(value).__name__)


class _Object:
    """Typed access to the fields of one JSON object, each failure naming the field's dotted path."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise StatusFormatError(where, f"expected an object, got {_describe(value)}")
        self._fields: dict[str, object] = value
        self._where = where

    def field_names(self) -> list[str]:
        return list(self._fields)

    def path(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def raw(self, key: str) -> object:
        if key not in self._fields:
            raise StatusFormatError(self.path(key), "missing")
        return self._fields[key]

    def text(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str):
            raise StatusFormatError(self.path(key), f"expected a string, got {_describe(value)}")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.raw(key) is None else self.text(key)

    def check_schema(self) -> None:
        """A present `schema` is a non-negative integer. Absent (dmnc 0.1), ours, or newer: all are read the same
        way, since a newer schema only adds fields, which the decoders ignore (see the module docstring)."""
        if "schema" in self._fields:
            self.count("schema")

    def raw_or_none(self, key: str) -> object:
        """The value of a field added after the first release, None when absent."""
        return self._fields.get(key)

    def later_text(self, key: str) -> str | None:
        """A string field added after the first release: absent (an older dmnc) reads as null."""
        return self.optional_text(key) if key in self._fields else None

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            raise StatusFormatError(self.path(key), f"expected true or false, got {_describe(value)}")
        return value

    def count(self, key: str) -> int:
        return _count(self.raw(key), self.path(key))

    def optional_seconds(self, key: str) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        return _seconds(value, self.path(key))

    def counts(self, key: str) -> dict[str, int]:
        table = _Object(self.raw(key), self.path(key))
        return {name: table.count(name) for name in table.field_names()}

    def nested(self, key: str) -> _Object:
        return _Object(self.raw(key), self.path(key))

    def array(self, key: str) -> list[object]:
        value = self.raw(key)
        if not isinstance(value, list):
            raise StatusFormatError(self.path(key), f"expected an array, got {_describe(value)}")
        return value


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StatusFormatError(where, f"expected a non-negative integer, got {_describe(value)} {value!r}")
    return value


def _seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise StatusFormatError(where, f"expected a non-negative number of seconds, got {_describe(value)} {value!r}")
    return float(value)


def _public_key(value: str | None, where: str) -> str | None:
    if value is None:
        return None
    try:
        decoded = base64.b64decode(value, validate=True)
    except binascii.Error:
        decoded = b""
    if len(decoded) != PUBLIC_KEY_BYTES:
        raise StatusFormatError(where, f"{value!r} is not the base64 of a {PUBLIC_KEY_BYTES}-byte public key")
    return value


def _route(value: object, where: str) -> RouteStatus:
    fields = _Object(value, where)
    subnet_text = fields.text("subnet")
    try:
        subnet = ipaddress.ip_network(subnet_text)
    except ValueError:
        raise StatusFormatError(fields.path("subnet"), f"{subnet_text!r} is not a subnet in CIDR notation") from None
    return RouteStatus(
        subnet=subnet,
        network=fields.text("network"),
        installed=fields.flag("installed"),
        reason=fields.later_text("reason"),
        decision=fields.later_text("decision"),
    )


def _dns_json(dns: DnsStatus) -> dict[str, object]:
    return {
        "domain": dns.domain,
        "port": dns.port,
        "addresses": list(dns.addresses),
        "records": dns.records,
        "last_update_age_s": dns.last_update_age_s,
        "problem": dns.problem,
        "host_resolver": dns.host_resolver,
        "drops": dict(dns.drops),
    }


def _path_json(path: PathStatus) -> dict[str, object]:
    return {
        "family": path.family,
        "path": path.path,
        "next_hop": path.next_hop,
        "interface": path.interface,
        "reason": path.reason,
        "problem": path.problem,
    }


def _one_of(fields: _Object, key: str, allowed: tuple[str, ...]) -> str:
    value = fields.text(key)
    if value not in allowed:
        raise StatusFormatError(fields.path(key), f"{value[:40]!r} is not one of {', '.join(allowed)}")
    return value


def _paths(top: _Object) -> tuple[PathStatus, ...]:
    """The `paths` array of schema 4; absent (an older dmnc) reads as empty."""
    if top.raw_or_none("paths") is None:
        return ()
    paths: list[PathStatus] = []
    for index, value in enumerate(top.array("paths")):
        fields = _Object(value, f"paths[{index}]")
        paths.append(
            PathStatus(
                family=_one_of(fields, "family", PATH_FAMILIES),
                path=_one_of(fields, "path", PATH_KINDS),
                reason=fields.text("reason"),
                next_hop=fields.optional_text("next_hop"),
                interface=fields.optional_text("interface"),
                problem=fields.flag("problem"),
            )
        )
    return tuple(paths)


def _dns(top: _Object) -> DnsStatus | None:
    """The `dns` object of schema 2; absent (an older dmnc) or null (--no-dns) reads as None."""
    if top.raw_or_none("dns") is None:
        return None
    fields = top.nested("dns")
    port = fields.raw("port")
    return DnsStatus(
        domain=fields.text("domain"),
        port=None if port is None else fields.count("port"),
        addresses=tuple(
            _text(item, f"{fields.path('addresses')}[{index}]") for index, item in enumerate(fields.array("addresses"))
        ),
        records=fields.count("records"),
        last_update_age_s=fields.optional_seconds("last_update_age_s"),
        problem=fields.optional_text("problem"),
        host_resolver=fields.optional_text("host_resolver"),
        drops=fields.counts("drops"),
    )


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise StatusFormatError(where, f"expected a string, got {_describe(value)}")
    return value


def decode_snapshot_untrusted(text: str | bytes) -> StatusSnapshot:
    """Parse and check the JSON form of a snapshot; raises StatusFormatError naming the bad field."""
    top = _Object(_load_json_untrusted(text), "")
    top.check_schema()
    tunnel = top.nested("tunnel")
    docker = top.nested("docker")
    vm = top.nested("vm")
    return StatusSnapshot(
        version=top.text("version"),
        tunnel=TunnelStatus(
            interface=tunnel.optional_text("interface"),
            listen=tunnel.optional_text("listen"),
            last_handshake_age_s=tunnel.optional_seconds("last_handshake_age_s"),
            endpoint=tunnel.optional_text("endpoint"),
            rx_bytes=tunnel.count("rx_bytes"),
            tx_bytes=tunnel.count("tx_bytes"),
            drops=tunnel.counts("drops"),
        ),
        docker=DockerStatus(
            host=docker.optional_text("host"),
            runtime=docker.optional_text("runtime"),
            api_version=docker.optional_text("api_version"),
            connected=docker.flag("connected"),
        ),
        vm=VmStatus(
            mode=vm.optional_text("mode"),
            public_key=_public_key(vm.optional_text("public_key"), vm.path("public_key")),
        ),
        routes=tuple(_route(route, f"routes[{index}]") for index, route in enumerate(top.array("routes"))),
        dns=_dns(top),
        standby=top.later_text("standby"),
        paths=_paths(top),
    )


def decode_event_untrusted(text: str | bytes) -> StatusEvent:
    """Parse and check the JSON form of an event; raises StatusFormatError naming the bad field."""
    fields = _Object(_load_json_untrusted(text), "")
    fields.check_schema()
    kind = fields.text("kind")
    if not _EVENT_KIND.fullmatch(kind):
        raise StatusFormatError("kind", f"{kind!r} is not 'area.what' in lower case")
    details = fields.nested("details")
    detail_values: dict[str, DetailValue] = {}
    for name in details.field_names():
        value = details.raw(name)
        if isinstance(value, float) and not math.isfinite(value):
            raise StatusFormatError(details.path(name), "not a finite number")
        if not isinstance(value, str | int | float | bool | None):
            raise StatusFormatError(
                details.path(name), f"expected a string, number, boolean or null, got {_describe(value)}"
            )
        detail_values[name] = value
    return StatusEvent(
        time=_seconds(fields.raw("time"), "time"), kind=kind, message=fields.text("message"), details=detail_values
    )
