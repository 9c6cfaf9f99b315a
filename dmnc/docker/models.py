"""Typed, validated views of the Engine API objects dmnc reads.

Each model has `from_json_untrusted(value)` taking the decoded JSON of a daemon response. Daemon JSON is untrusted
input: a missing required field, a wrong type or an unparsable subnet raises `BadResponse`, never KeyError/TypeError.
Fields that older daemons or Podman leave out (or send as null) get documented defaults instead. Unknown fields are
ignored, so newer daemons keep working.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

from dmnc.docker.errors import BadResponse

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class JsonFields:
    """Typed field access on one untrusted JSON object; every failure is a BadResponse naming the object and key."""

    def __init__(self, value: object, what: str) -> None:
        if not isinstance(value, dict):
            raise BadResponse(f"{what}: expected a JSON object, got {type(value).__name__}")
        self._data: dict[str, object] = value
        self._what = what

    def _fail(self, key: str, expected: str) -> BadResponse:
        return BadResponse(f"{self._what}: field {key!r} must be {expected}, got {self._data.get(key)!r:.80}")

    def value(self, key: str) -> object:
        """The raw value of `key` (None when missing), for a nested model to validate."""
        return self._data.get(key)

    def required_str(self, key: str) -> str:
        value = self._data.get(key)
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def optional_str(self, key: str, default: str = "") -> str:
        """A string field that may be missing or null (then `default`)."""
        value = self._data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._fail(key, "a string")
        return value

    def optional_bool(self, key: str, default: bool = False) -> bool:
        value = self._data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(key, "a boolean")
        return value

    def optional_int(self, key: str, default: int = 0) -> int:
        value = self._data.get(key)
        if value is None:
            return default
        # bool is an int subclass in Python, but never a number in JSON.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._fail(key, "an integer")
        return value

    def required_int(self, key: str) -> int:
        if self._data.get(key) is None:
            raise self._fail(key, "an integer")
        return self.optional_int(key)

    def string_map(self, key: str) -> dict[str, str]:
        """A {string: string} object such as Labels or Options; missing or null is empty."""
        value = self._data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(
            isinstance(item_key, str) and isinstance(item_value, str) for item_key, item_value in value.items()
        ):
            raise self._fail(key, "an object of strings")
        return dict(value)

    def string_list(self, key: str) -> tuple[str, ...]:
        value = self._data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._fail(key, "a list of strings")
        return tuple(value)

    def object_list(self, key: str) -> list[object]:
        value = self._data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._fail(key, "a list")
        return value

    def field_names(self) -> tuple[str, ...]:
        """The object's keys (JSON object keys are always strings)."""
        return tuple(self._data)

    def nested(self, key: str) -> JsonFields:
        """A nested object; missing or null reads as an empty object."""
        value = self._data.get(key)
        return JsonFields({} if value is None else value, f"{self._what}.{key}")


def _parse_network(text: str, what: str) -> IPNetwork | None:
    if not text:
        return None
    try:
        # strict=False: daemons accept and echo subnets written with host bits set (e.g. 172.20.0.1/16).
        return ipaddress.ip_network(text, strict=False)
    except ValueError as error:
        raise BadResponse(f"{what}: not an IP subnet: {text!r:.80}") from error


# The driver option naming a macvlan/ipvlan network's parent interface (Docker docs, "Macvlan network driver":
# `docker network create -d macvlan -o parent=eth0`). Without it Docker makes a dummy parent with no way out.
PARENT_OPTION = "parent"

# How Go prints a nil net.IP; Podman 4.3 sends it as the Gateway of internal networks.
GO_NIL_IP = "<nil>"


def _parse_address(text: str, what: str) -> IPAddress | None:
    if not text or text == GO_NIL_IP:
        return None
    try:
        # Podman writes gateways without a prefix, some Docker versions with one: accept both.
        return ipaddress.ip_interface(text).ip
    except ValueError as error:
        raise BadResponse(f"{what}: not an IP address: {text!r:.80}") from error


def json_list_untrusted(value: object, what: str) -> list[object]:
    if value is None:
        # Podman answers an empty list as null for some collections.
        return []
    if not isinstance(value, list):
        raise BadResponse(f"{what}: expected a JSON list, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class IpamConfig:
    """One IPAM pool of a network: the subnet dmnc routes to, and its gateway (either may be absent).

    `ip_range` is the part of the subnet Docker hands to containers (`--ip-range`); `aux_addresses` are the
    addresses reserved by name so that Docker never hands them out (`--aux-address NAME=IP`, the Engine API's
    `AuxiliaryAddresses`)."""

    subnet: IPNetwork | None
    gateway: IPAddress | None = None
    ip_range: IPNetwork | None = None
    aux_addresses: Mapping[str, IPAddress] = field(default_factory=dict)

    @classmethod
    def from_json_untrusted(cls, value: object) -> Self:
        fields = JsonFields(value, "IPAM config")
        aux_addresses: dict[str, IPAddress] = {}
        for name, text in fields.string_map("AuxiliaryAddresses").items():
            address = _parse_address(text, f"IPAM config AuxiliaryAddresses {name[:40]!r}")
            if address is not None:
                aux_addresses[name] = address
        return cls(
            subnet=_parse_network(fields.optional_str("Subnet"), "IPAM config Subnet"),
            gateway=_parse_address(fields.optional_str("Gateway"), "IPAM config Gateway"),
            ip_range=_parse_network(fields.optional_str("IPRange"), "IPAM config IPRange"),
            aux_addresses=aux_addresses,
        )


@dataclass(frozen=True)
class Network:
    """A Docker network as `GET /networks` and `GET /networks/{id}` describe it."""

    id: str
    name: str
    driver: str
    scope: str = "local"
    internal: bool = False
    enable_ipv6: bool = False
    # API >= 1.48 (Docker 28) can make IPv6-only networks; older daemons do not send the field: IPv4 is on.
    enable_ipv4: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    ipam_configs: tuple[IpamConfig, ...] = ()
    # Why the IPAM config could not be read (a malformed subnet, gateway or shape); then `ipam_configs` is empty.
    # The network is still listed, so that the route policy can skip it with this reason instead of failing all.
    malformed: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    """The driver options (`docker network create -o KEY=VALUE`), such as macvlan's `parent`."""

    @property
    def parent(self) -> str:
        """The host interface a macvlan or ipvlan network hangs off (`-o parent=IF`); empty when not given."""
        return self.options.get(PARENT_OPTION, "")

    @property
    def subnets(self) -> tuple[IPNetwork, ...]:
        """Every subnet of the network, IPv4 and IPv6, in daemon order."""
        return tuple(config.subnet for config in self.ipam_configs if config.subnet is not None)

    @classmethod
    def from_json_untrusted(cls, value: object) -> Self:
        fields = JsonFields(value, "network")
        malformed = None
        try:
            ipam = fields.nested("IPAM")
            ipam_configs = tuple(IpamConfig.from_json_untrusted(config) for config in ipam.object_list("Config"))
        except BadResponse as error:
            ipam_configs, malformed = (), str(error)
        return cls(
            id=fields.required_str("Id"),
            name=fields.required_str("Name"),
            driver=fields.optional_str("Driver"),
            scope=fields.optional_str("Scope", "local"),
            internal=fields.optional_bool("Internal"),
            enable_ipv6=fields.optional_bool("EnableIPv6"),
            enable_ipv4=fields.optional_bool("EnableIPv4", default=True),
            labels=fields.string_map("Labels"),
            ipam_configs=ipam_configs,
            malformed=malformed,
            options=fields.string_map("Options"),
        )


@dataclass(frozen=True)
class Version:
    """`GET /version`: the engine's version, API version range and the components that serve it."""

    version: str
    api_version: str
    min_api_version: str = ""
    os: str = ""
    arch: str = ""
    kernel_version: str = ""
    platform_name: str = ""
    component_names: tuple[str, ...] = ()

    @classmethod
    def from_json_untrusted(cls, value: object) -> Self:
        fields = JsonFields(value, "version")
        components = tuple(
            JsonFields(component, "version component").required_str("Name")
            for component in fields.object_list("Components")
        )
        return cls(
            version=fields.required_str("Version"),
            api_version=fields.required_str("ApiVersion"),
            min_api_version=fields.optional_str("MinAPIVersion"),
            os=fields.optional_str("Os"),
            arch=fields.optional_str("Arch"),
            kernel_version=fields.optional_str("KernelVersion"),
            platform_name=fields.nested("Platform").optional_str("Name"),
            component_names=components,
        )


@dataclass(frozen=True)
class Info:
    """The parts of `GET /info` that identify the engine and the VM it runs in."""

    id: str
    name: str
    server_version: str = ""
    operating_system: str = ""
    os_type: str = ""
    kernel_version: str = ""
    architecture: str = ""
    cpus: int = 0
    memory_bytes: int = 0
    labels: tuple[str, ...] = ()
    firewall_backend: str = ""
    """`FirewallBackend.Driver` (Engine API FirewallInfo, newer engines on Linux): "iptables", "nftables", ...; empty
    when not reported."""

    @classmethod
    def from_json_untrusted(cls, value: object) -> Self:
        fields = JsonFields(value, "info")
        return cls(
            # Podman leaves ID empty; Name (the VM's host name) is what runtimes are recognised by.
            id=fields.optional_str("ID"),
            name=fields.optional_str("Name"),
            server_version=fields.optional_str("ServerVersion"),
            operating_system=fields.optional_str("OperatingSystem"),
            os_type=fields.optional_str("OSType"),
            kernel_version=fields.optional_str("KernelVersion"),
            architecture=fields.optional_str("Architecture"),
            cpus=fields.optional_int("NCPU"),
            memory_bytes=fields.optional_int("MemTotal"),
            labels=fields.string_list("Labels"),
            firewall_backend=fields.nested("FirewallBackend").optional_str("Driver"),
        )


@dataclass(frozen=True)
class ContainerState:
    """`State` of `GET /containers/{id}/json`; `pid` is the main process's PID on the daemon's host (0 if stopped)."""

    status: str
    running: bool = False
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    oom_killed: bool = False
    started_at: str = ""
    finished_at: str = ""

    @classmethod
    def from_json_untrusted(cls, value: object) -> Self:
        fields = JsonFields(value, "container state")
        return cls(
            status=fields.required_str("Status"),
            running=fields.optional_bool("Running"),
            pid=fields.optional_int("Pid"),
            exit_code=fields.optional_int("ExitCode"),
            error=fields.optional_str("Error"),
            oom_killed=fields.optional_bool("OOMKilled"),
            started_at=fields.optional_str("StartedAt"),
            finished_at=fields.optional_str("FinishedAt"),
        )


@dataclass(frozen=True)
class ContainerInfo:
    """The parts of `GET /containers/{id}/json` dmnc uses."""

    id: str
    name: str
    image: str
    state: ContainerState
    tty: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json_untrusted(cls, value: object) -> Self:
        fields = JsonFields(value, "container")
        config = fields.nested("Config")
        return cls(
            id=fields.required_str("Id"),
            name=fields.optional_str("Name").removeprefix("/"),
            image=fields.optional_str("Image"),
            state=ContainerState.from_json_untrusted(fields.value("State")),
            tty=config.optional_bool("Tty"),
            labels=config.string_map("Labels"),
        )


@dataclass(frozen=True)
class ContainerSummary:
    """One entry of `GET /containers/json` (running containers): name, labels and the address on each network.

    `networks` maps a network's name to the container's addresses on it (IPv4 `IPAddress`, then
    `GlobalIPv6Address`, where set)."""

    id: str
    name: str
    state: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    networks: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)

    @classmethod
    def from_json_untrusted(cls, value: object) -> Self:
        fields = JsonFields(value, "container summary")
        networks_field = fields.nested("NetworkSettings").nested("Networks")
        networks: dict[str, tuple[IPAddress, ...]] = {}
        for network_name in networks_field.field_names():
            endpoint = networks_field.nested(network_name)
            addresses = (
                _parse_address(endpoint.optional_str(key), f"container summary {network_name} {key}")
                for key in ("IPAddress", "GlobalIPv6Address")
            )
            networks[network_name] = tuple(address for address in addresses if address is not None)
        names = fields.string_list("Names")
        return cls(
            id=fields.required_str("Id"),
            # Docker lists the name with a leading "/" (links used to add more names; the first is the container's).
            name=names[0].removeprefix("/") if names else "",
            state=fields.optional_str("State"),
            labels=fields.string_map("Labels"),
            networks=networks,
        )


@dataclass(frozen=True)
class CreatedContainer:
    """`POST /containers/create`: the new container's id and the daemon's warnings."""

    id: str
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_json_untrusted(cls, value: object) -> Self:
        fields = JsonFields(value, "created container")
        return cls(id=fields.required_str("Id"), warnings=fields.string_list("Warnings"))


@dataclass(frozen=True)
class WaitResult:
    """`POST /containers/{id}/wait`: the exit status, and the daemon's error waiting, if any."""

    status_code: int
    error: str = ""

    @classmethod
    def from_json_untrusted(cls, value: object) -> Self:
        fields = JsonFields(value, "wait result")
        return cls(status_code=fields.required_int("StatusCode"), error=fields.nested("Error").optional_str("Message"))


@dataclass(frozen=True)
class ImageInfo:
    """The parts of `GET /images/{name}/json` dmnc uses."""

    id: str
    repo_tags: tuple[str, ...] = ()
    created: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json_untrusted(cls, value: object) -> Self:
        fields = JsonFields(value, "image")
        return cls(
            id=fields.required_str("Id"),
            repo_tags=fields.string_list("RepoTags"),
            created=fields.optional_str("Created"),
            labels=fields.nested("Config").string_map("Labels"),
        )


@dataclass(frozen=True)
class Event:
    """One object of the `GET /events` stream.

    `time_nano` (nanoseconds since the epoch) orders events and is what a reconnect passes back as `since`.
    """

    type: str
    action: str
    actor_id: str
    actor_attributes: Mapping[str, str] = field(default_factory=dict)
    scope: str = ""
    time_nano: int = 0

    @classmethod
    def from_json_untrusted(cls, value: object) -> Self:
        fields = JsonFields(value, "event")
        actor = fields.nested("Actor")
        # API < 1.22 daemons sent only `status`/`id`/`time`; keep them readable as a fallback.
        time_nano = fields.optional_int("timeNano")
        if time_nano == 0:
            time_nano = fields.optional_int("time") * 1_000_000_000
        return cls(
            type=fields.optional_str("Type"),
            action=fields.optional_str("Action") or fields.optional_str("status"),
            actor_id=actor.optional_str("ID") or fields.optional_str("id"),
            actor_attributes=actor.string_map("Attributes"),
            scope=fields.optional_str("scope"),
            time_nano=time_nano,
        )


@dataclass(frozen=True)
class ProgressMessage:
    """One JSON message of a pull or build progress stream (Docker's `jsonmessage`).

    `stream` carries build output text; `status`/`progress`/`id` carry pull progress; `error` is set when the
    operation failed (the stream ends after it); `aux` holds auxiliary results such as the built image's ID.
    """

    status: str = ""
    id: str = ""
    progress: str = ""
    stream: str = ""
    error: str = ""
    aux: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def from_json_untrusted(cls, value: object) -> Self:
        fields = JsonFields(value, "progress message")
        error = fields.optional_str("error") or fields.nested("errorDetail").optional_str("message")
        aux_value = fields.value("aux")
        return cls(
            status=fields.optional_str("status"),
            id=fields.optional_str("id"),
            progress=fields.optional_str("progress"),
            stream=fields.optional_str("stream"),
            error=error,
            aux=dict(aux_value) if isinstance(aux_value, dict) else {},
        )
