"""dmnc's configuration: one typed, validated `Config` built from flags, environment and a TOML file.

Precedence, per option: command-line flag > environment variable > config file > built-in default.

| option         | flag                     | environment                    | TOML key         |
|----------------|--------------------------|--------------------------------|------------------|
| docker_host    | --docker-host URL        | DMNC_DOCKER_HOST               | docker_host      |
| listen         | --listen ADDR[:PORT]     | DMNC_LISTEN                    | listen           |
| endpoint       | --endpoint HOST[:PORT]   | DMNC_ENDPOINT                  | endpoint         |
| setup_image    | --setup-image REF        | DMNC_SETUP_IMAGE               | setup_image      |
| control_socket | --control-socket PATH    | DMNC_CONTROL_SOCKET            | control_socket   |
| keep_vm_config | --keep-vm-config         | DMNC_KEEP_VM_CONFIG            | keep_vm_config   |
| log_level      | -v/--log-level LEVEL     | DMNC_LOG_LEVEL, then LOG_LEVEL | log_level        |
| vm_stale_after | --vm-stale-after SECONDS | DMNC_VM_STALE_AFTER            | vm_stale_after   |
| routes.force   | --force-routes           | DMNC_FORCE_ROUTES              | force_routes     |
| routes.include | --route-include PATTERN  | DMNC_ROUTES_INCLUDE (a,b,...)  | [routes] include |
| routes.exclude | --route-exclude PATTERN  | DMNC_ROUTES_EXCLUDE (a,b,...)  | [routes] exclude |
| routes.allow   | --route-allow CIDR       | DMNC_ROUTES_ALLOW (a,b,...)    | [routes] allow   |
| routes.over    | --route-over CIDR        | DMNC_ROUTES_OVER (a,b,...)     | [routes] over    |
| dns_domain     | --dns-domain NAME        | DMNC_DNS_DOMAIN                | [dns] domain     |
| dns_enabled    | --no-dns (turns it off)  | DMNC_NO_DNS                    | [dns] disabled   |
| inbound_allow  | --allow-inbound PORT[/P] | DMNC_ALLOW_INBOUND (a,b,...)   | [inbound] allow  |
| path           | --path auto|tunnel|direct | DMNC_PATH                     | path             |

The config file is /etc/dmnc/config.toml unless `--config PATH` or DMNC_CONFIG names another one. A missing default
file is normal (every option has a default); a missing file that was named explicitly is an error. LOG_LEVEL is read
for compatibility with docker-mac-net-connect. Empty environment variables count as unset, as in Docker's own CLI.

vm_stale_after is how many seconds without a packet from the VM side make dmnc set that side up again: a number
(fractions allowed) from 1 to 3600, default 40. The VM sends a keepalive every 25 s, so below 30 s (keepalive plus
one REKEY_TIMEOUT) an idle but healthy VM looks stale; such values are for tests and the service warns about them.
SIGHUP applies a new value at once, as it does log_level, the route options and inbound_allow; the other options
take effect when dmnc restarts.

inbound_allow lists the host ports (PORT, PORT/tcp or PORT/udp) containers may open connections to through the
tunnel (repeatable flag; a port alone means TCP, as in `docker run -p`). The default is none: the VM reaches the host
only with replies to flows the host started (dmnc.tunnel.flowfilter). A change also sets the VM side up again, whose
firewall lets the same ports through.

The route options (all reloaded by SIGHUP; see dmnc.routes.policy for the rules): include/exclude pick networks by
name glob or CIDR; allow admits subnets outside the private ranges; over routes the subnets it contains even where
they overlap routes of other programs (a VPN, a LAN), and keeps them against later ones; force_routes is the
deprecated spelling of "over everything", and warns. No option routes the never-list.

dns_domain is the domain under which containers have names (default dmnc.internal); local, localhost, arpa and
names under them are refused (home.arpa excepted), see dmnc/dns/domain.py. dns_enabled is off with --no-dns. SIGHUP
changes neither: both take effect when dmnc restarts.

path chooses how the host reaches containers, per address family (dmnc.supervisor.path): `auto` (the default) goes
direct via the VM's own address where the VM shares a link with the host and answers a probe there, else through
the tunnel; `tunnel` always uses the tunnel; `direct` chooses as `auto` does but reports a family left on the
tunnel as a problem. SIGHUP applies a new value at once (a change also sets the VM side up again).

Every bad value raises `ConfigError`, whose message names where the value came from (flag, environment variable,
or file:line and key) and what is wrong with it.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import os
import re
import stat
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from dmnc.dns.domain import DEFAULT_DOMAIN as DEFAULT_DNS_DOMAIN
from dmnc.dns.domain import DomainError, parse_domain
from dmnc.hardening.file_trust import ROOT_UID, untrusted_path
from dmnc.logsetup import LogLevel
from dmnc.routes.manager import Destination
from dmnc.routes.policy import Pattern, PolicyConfig, PolicyConfigError, parse_cidr, parse_pattern
from dmnc.tunnel.flowfilter import InboundPort

if TYPE_CHECKING:
    # Imported where used: the Docker client pulls in httpx, which `dmnc status` (a config reader) never needs.
    from dmnc.docker.address import DaemonAddress

DEFAULT_CONFIG_PATH = Path("/etc/dmnc/config.toml")
DEFAULT_CONTROL_SOCKET = Path("/var/run/dmnc.sock")
# docker-mac-net-connect's UDP port; the VM side dials it unless told otherwise.
DEFAULT_LISTEN_PORT = 3333
# Every address: the VM reaches the host through an address dmnc cannot know in advance (host.docker.internal).
DEFAULT_LISTEN_HOST = ipaddress.IPv4Address("0.0.0.0")  # noqa: S104

# The VM side sends a persistent keepalive every 25 s (PERSISTENT_KEEPALIVE in dmnc/vm/setup.sh): silence for that
# long plus one REKEY_TIMEOUT (5 s, WireGuard whitepaper section 6.1) and a 10 s margin means the VM lost its end.
DEFAULT_VM_STALE_AFTER_S = 40.0
# Bounds of vm_stale_after: from 1 s, so that tests see a recovery within seconds, to one hour, beyond which a VM
# side that lost its end (VM restarted, interface deleted) would stay unreachable too long to be worth configuring.
MIN_VM_STALE_AFTER_S = 1.0
MAX_VM_STALE_AFTER_S = 3600.0

# sockaddr_un.sun_path is 108 bytes on Linux (<linux/un.h> UNIX_PATH_MAX) and 104 on macOS (<sys/un.h>), NUL included.
MAX_UNIX_SOCKET_PATH_BYTES = 103 if sys.platform == "darwin" else 107

_T = TypeVar("_T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ConfigError(Exception):
    """A configuration value is missing or invalid. `source` names where it came from, `reason` what is wrong."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ValueProblem(ValueError):
    """Raised by the value parsers; `load_config` turns it into a ConfigError naming the value's source."""


# Spellings accepted besides the canonical names: "verbose" is docker-mac-net-connect's (wireguard-go's) name for
# its debug level, "warn" is common in Go tools.
_LOG_LEVEL_ALIASES = {"verbose": LogLevel.DEBUG, "warn": LogLevel.WARNING}


@dataclass(frozen=True)
class ListenAddress:
    """The local UDP address of the host's WireGuard peer.

    `port_explicit` is False when the port is the default: only then may the service fall back to a free port when
    the default one is taken; an explicitly requested port that is taken is an error.
    """

    host: IPAddress
    port: int
    port_explicit: bool

    def __str__(self) -> str:
        return format_host_port(str(self.host), self.port)


@dataclass(frozen=True)
class EndpointOption:
    """The --endpoint option: what the VM dials to reach the host.

    `port` None means "the port dmnc actually listens on". (Not the WireGuard core's `Endpoint`, an address pair.)
    """

    host: str
    port: int | None

    def __str__(self) -> str:
        return self.host if self.port is None else format_host_port(self.host, self.port)


class PathOption(enum.Enum):
    """`--path`: how the host reaches containers (dmnc.supervisor.path decides per address family)."""

    AUTO = "auto"  # direct where the VM shares a link with the host and answers there, else the tunnel
    TUNNEL = "tunnel"  # always the tunnel
    DIRECT = "direct"  # as auto, but a family left on the tunnel is reported as a problem


@dataclass(frozen=True)
class Config:
    """Everything the service needs to know before it starts. None means "detect it" where documented."""

    # None: detect the daemon (DOCKER_HOST, docker context, the runtimes' usual sockets).
    docker_host: DaemonAddress | None = None
    listen: ListenAddress = ListenAddress(DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT, port_explicit=False)
    endpoint: EndpointOption | None = None
    # None: the setup image dmnc builds from its embedded recipe.
    setup_image: str | None = None
    control_socket: Path = DEFAULT_CONTROL_SOCKET
    keep_vm_config: bool = False
    log_level: LogLevel = LogLevel.INFO
    # Seconds without a packet from the VM side after which it is set up again.
    vm_stale_after: float = DEFAULT_VM_STALE_AFTER_S
    # Which networks get routes: include/exclude patterns, allow and over CIDRs, --force-routes (routes.force).
    routes: PolicyConfig = field(default_factory=PolicyConfig)
    # Host ports containers may open new connections to through the tunnel (sorted, no repeats).
    inbound_allow: tuple[InboundPort, ...] = ()
    # The file the values were read from, if one was read: SIGHUP reloads it.
    config_file: Path | None = None
    # Containers by name (dmnc/dns): the domain, and whether the DNS server runs at all.
    dns_domain: str = DEFAULT_DNS_DOMAIN
    dns_enabled: bool = True
    # Tunnel, or direct via the VM's address on a shared link (dmnc.supervisor.path).
    path: PathOption = PathOption.AUTO


@dataclass(frozen=True)
class ConfigFlags:
    """The configuration as given on the command line, unparsed; None means the flag was not given."""

    config_file: str | None = None
    docker_host: str | None = None
    listen: str | None = None
    endpoint: str | None = None
    setup_image: str | None = None
    control_socket: str | None = None
    keep_vm_config: bool | None = None
    log_level: str | None = None
    vm_stale_after: str | None = None
    force_routes: bool | None = None
    route_include: tuple[str, ...] | None = None
    route_exclude: tuple[str, ...] | None = None
    route_allow: tuple[str, ...] | None = None
    route_over: tuple[str, ...] | None = None
    dns_domain: str | None = None
    no_dns: bool | None = None
    allow_inbound: tuple[str, ...] | None = None
    path: str | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Value parsers: text in, typed value out, ValueProblem on anything else.

_PORT_TEXT = re.compile(r"[0-9]{1,5}")


# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, 1-63 characters each (the rule
# dmnc.vm.params applies too; not imported from there, since that package loads the whole VM setup runner).
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MAX_HOSTNAME_LENGTH = 253


def format_host_port(host: str, port: int) -> str:
    """`HOST:PORT`, an IPv6 address in brackets (RFC 3986 section 3.2.2): the one way dmnc writes an endpoint, in
    logs, `dmnc status` and `dmnc doctor`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(text: str) -> tuple[str, str | None]:
    """Split `HOST`, `HOST:PORT`, `[IPV6]` or `[IPV6]:PORT` into host text and port text (None when absent).

    A bare IPv6 address without brackets is accepted only without a port, since `::1:3333` is itself an address.
    """
    if text.startswith("["):
        closing = text.find("]")
        if closing < 0:
            raise ValueProblem(f"{text!r} opens '[' without a closing ']'")
        host, rest = text[1:closing], text[closing + 1 :]
        if not host:
            raise ValueProblem(f"{text!r} has an empty address between '[' and ']'")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueProblem(f"{text!r} has {rest!r} after ']' where ':PORT' or nothing was expected")
        return host, rest[1:]
    if text.count(":") > 1:
        return text, None
    host, colon, port = text.partition(":")
    return host, (port if colon else None)


def parse_port(text: str, *, allow_zero: bool) -> int:
    if not _PORT_TEXT.fullmatch(text):
        raise ValueProblem(f"port {text!r} is not a number")
    port = int(text)
    lowest = 0 if allow_zero else 1
    if not lowest <= port <= 65535:
        raise ValueProblem(f"port {port} is not in {lowest}-65535")
    return port


def parse_ip_address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueProblem(f"{text!r} is not an IP address") from None


def parse_listen(text: str) -> ListenAddress:
    """`ADDR[:PORT]`: a local IP address (IPv6 in brackets when a port follows), port 0 meaning any free port."""
    host_text, port_text = split_host_port(text.strip())
    if not host_text:
        raise ValueProblem(f"{text!r} has no address (use 0.0.0.0:PORT to listen on every address)")
    host = parse_ip_address(host_text)
    if port_text is None:
        return ListenAddress(host, DEFAULT_LISTEN_PORT, port_explicit=False)
    return ListenAddress(host, parse_port(port_text, allow_zero=True), port_explicit=True)


def parse_hostname(text: str) -> str:
    if len(text) > _MAX_HOSTNAME_LENGTH or not all(_HOST_LABEL.fullmatch(label) for label in text.split(".")):
        raise ValueProblem(f"{text!r} is neither an IP address nor a valid host name")
    return text


def parse_endpoint(text: str) -> EndpointOption:
    """`HOST[:PORT]`: a host name or IP address the VM can reach (IPv6 in brackets when a port follows)."""
    host_text, port_text = split_host_port(text.strip())
    if not host_text:
        raise ValueProblem(f"{text!r} has no host")
    try:
        host = str(ipaddress.ip_address(host_text))
    except ValueError:
        host = parse_hostname(host_text)
    return EndpointOption(host, None if port_text is None else parse_port(port_text, allow_zero=False))


def parse_unix_socket_path(text: str) -> Path:
    if not text:
        raise ValueProblem("the socket path is empty")
    if "\0" in text:
        raise ValueProblem("the socket path contains a NUL byte")
    path = Path(os.path.abspath(text))
    if len(os.fsencode(path)) > MAX_UNIX_SOCKET_PATH_BYTES:
        raise ValueProblem(f"{str(path)!r} is longer than the {MAX_UNIX_SOCKET_PATH_BYTES} bytes a Unix socket allows")
    return path


def parse_docker_host(text: str) -> DaemonAddress:
    """`unix:///path/docker.sock` (or just the path) or `tcp://host:port`, as DOCKER_HOST takes them."""
    from dmnc.docker.address import DaemonAddress  # noqa: PLC0415
    from dmnc.docker.errors import InvalidDaemonAddress  # noqa: PLC0415

    try:
        return DaemonAddress.parse(text.strip())
    except InvalidDaemonAddress as error:
        raise ValueProblem(str(error)) from None


# Image reference grammar of distribution/reference (reference/regexp.go): [domain[:port]/]path[:tag][@digest].
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_IMAGE_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII
)
_MAX_IMAGE_NAME_LENGTH = 255


def parse_image_reference(text: str) -> str:
    match = _IMAGE_REFERENCE.fullmatch(text.strip())
    if match is None:
        raise ValueProblem(f"{text!r} is not an image reference like registry.example/name:tag")
    if len(match["name"]) > _MAX_IMAGE_NAME_LENGTH:
        raise ValueProblem(f"the image name in {text!r} is longer than {_MAX_IMAGE_NAME_LENGTH} characters")
    return match.string


def parse_log_level(text: str) -> LogLevel:
    name = text.strip().lower()
    if name in _LOG_LEVEL_ALIASES:
        return _LOG_LEVEL_ALIASES[name]
    try:
        return LogLevel(name)
    except ValueError:
        choices = ", ".join([*LogLevel, *_LOG_LEVEL_ALIASES])
        raise ValueProblem(f"unknown log level {text!r}; expected one of {choices}") from None


# Plain decimal seconds: no sign, exponent, "inf" or "nan", which float() would accept.
_SECONDS_TEXT = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")


_INBOUND_PORT = re.compile(r"([0-9]{1,5})(?:/(tcp|udp))?")


def parse_inbound_port(text: str) -> InboundPort:
    """`PORT[/tcp|/udp]` (TCP when no protocol is given), PORT from 1 to 65535."""
    match = _INBOUND_PORT.fullmatch(text.strip().lower())
    if match is None:
        raise ValueProblem(f"{text!r} is not PORT, PORT/tcp or PORT/udp")
    return InboundPort(parse_port(match[1], allow_zero=False), match[2] or "tcp")


def parse_vm_stale_after(value: str | float) -> float:
    """Seconds as text (flag, environment) or a TOML number, within MIN_VM_STALE_AFTER_S-MAX_VM_STALE_AFTER_S."""
    if isinstance(value, str):
        # The number as matched: str.strip() takes more characters for space (U+001F, ...) than float() does.
        text = value.strip()
        if not _SECONDS_TEXT.fullmatch(text):
            raise ValueProblem(f"{value!r} is not a number of seconds")
        value = float(text)
    if not MIN_VM_STALE_AFTER_S <= value <= MAX_VM_STALE_AFTER_S:
        raise ValueProblem(
            f"{value:g} seconds is not in {MIN_VM_STALE_AFTER_S:g}-{MAX_VM_STALE_AFTER_S:g}"
            f" (the default is {DEFAULT_VM_STALE_AFTER_S:g})"
        )
    return value


_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def parse_dns_domain(text: str) -> str:
    """The DNS domain, normalised (lower case, no final dot); refused names raise ValueProblem."""
    try:
        return parse_domain(text).to_text(omit_final_dot=True)
    except DomainError as error:
        raise ValueProblem(str(error)) from None


def parse_path(text: str) -> PathOption:
    try:
        return PathOption(text.strip().lower())
    except ValueError:
        raise ValueProblem(f"{text!r} is not a path; expected auto, tunnel or direct") from None


def parse_bool_word(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueProblem(f"{text!r} is not a yes/no value; expected one of 1, true, yes, on, 0, false, no, off")


def _split_list(text: str) -> list[str]:
    return [item for item in (part.strip() for part in text.split(",")) if item]


# ---------------------------------------------------------------------------------------------------------------------
# Sources


class _Kind(enum.Enum):
    TEXT = "a string"
    SWITCH = "true or false"
    LIST = "an array of strings"
    SECONDS = "a number of seconds"


@dataclass(frozen=True)
class _Option:
    """One option and how each layer spells it."""

    name: str
    kind: _Kind
    flag: str
    env: tuple[str, ...]
    toml_key: tuple[str, ...]


_DOCKER_HOST = _Option("docker_host", _Kind.TEXT, "--docker-host", ("DMNC_DOCKER_HOST",), ("docker_host",))
_LISTEN = _Option("listen", _Kind.TEXT, "--listen", ("DMNC_LISTEN",), ("listen",))
_ENDPOINT = _Option("endpoint", _Kind.TEXT, "--endpoint", ("DMNC_ENDPOINT",), ("endpoint",))
_SETUP_IMAGE = _Option("setup_image", _Kind.TEXT, "--setup-image", ("DMNC_SETUP_IMAGE",), ("setup_image",))
_CONTROL_SOCKET = _Option(
    "control_socket", _Kind.TEXT, "--control-socket", ("DMNC_CONTROL_SOCKET",), ("control_socket",)
)
_KEEP_VM_CONFIG = _Option(
    "keep_vm_config", _Kind.SWITCH, "--keep-vm-config", ("DMNC_KEEP_VM_CONFIG",), ("keep_vm_config",)
)
_LOG_LEVEL = _Option("log_level", _Kind.TEXT, "--log-level", ("DMNC_LOG_LEVEL", "LOG_LEVEL"), ("log_level",))
_VM_STALE_AFTER = _Option(
    "vm_stale_after", _Kind.SECONDS, "--vm-stale-after", ("DMNC_VM_STALE_AFTER",), ("vm_stale_after",)
)
_FORCE_ROUTES = _Option("force_routes", _Kind.SWITCH, "--force-routes", ("DMNC_FORCE_ROUTES",), ("force_routes",))
_ROUTE_INCLUDE = _Option(
    "route_include", _Kind.LIST, "--route-include", ("DMNC_ROUTES_INCLUDE",), ("routes", "include")
)
_ROUTE_EXCLUDE = _Option(
    "route_exclude", _Kind.LIST, "--route-exclude", ("DMNC_ROUTES_EXCLUDE",), ("routes", "exclude")
)
_ROUTE_ALLOW = _Option("route_allow", _Kind.LIST, "--route-allow", ("DMNC_ROUTES_ALLOW",), ("routes", "allow"))
_ROUTE_OVER = _Option("route_over", _Kind.LIST, "--route-over", ("DMNC_ROUTES_OVER",), ("routes", "over"))
_DNS_DOMAIN = _Option("dns_domain", _Kind.TEXT, "--dns-domain", ("DMNC_DNS_DOMAIN",), ("dns", "domain"))
_NO_DNS = _Option("no_dns", _Kind.SWITCH, "--no-dns", ("DMNC_NO_DNS",), ("dns", "disabled"))
_ALLOW_INBOUND = _Option("allow_inbound", _Kind.LIST, "--allow-inbound", ("DMNC_ALLOW_INBOUND",), ("inbound", "allow"))
_PATH = _Option("path", _Kind.TEXT, "--path", ("DMNC_PATH",), ("path",))
_OPTIONS = (
    _PATH,
    _DOCKER_HOST,
    _LISTEN,
    _ENDPOINT,
    _SETUP_IMAGE,
    _CONTROL_SOCKET,
    _KEEP_VM_CONFIG,
    _LOG_LEVEL,
    _VM_STALE_AFTER,
    _FORCE_ROUTES,
    _ROUTE_INCLUDE,
    _ROUTE_EXCLUDE,
    _ROUTE_ALLOW,
    _ROUTE_OVER,
    _DNS_DOMAIN,
    _NO_DNS,
    _ALLOW_INBOUND,
)
_TOML_TABLES = {
    "routes": frozenset({"include", "exclude", "allow", "over"}),
    "dns": frozenset({"domain", "disabled"}),
    "inbound": frozenset({"allow"}),
}
_TOML_TOP_LEVEL_KEYS = frozenset(option.toml_key[0] for option in _OPTIONS if len(option.toml_key) == 1)


# Far above any real configuration; a bound so that a wrong path (a device, a log file) fails fast.
MAX_CONFIG_FILE_BYTES = 1 << 20


def _read_config_bytes(path: Path) -> bytes:
    """The file's bytes, refusing what a root service must not trust or cannot read safely.

    Opened non-blocking so that a FIFO cannot stall startup; a file that users other than its owner may change is
    refused when running as root, since it decides which image runs privileged in the VM (sshd's StrictModes rule).
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(str(path), "not a regular file")
        if os.geteuid() == 0:
            _refuse_config_others_may_change(path, info)
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_FILE_BYTES and (chunk := os.read(descriptor, MAX_CONFIG_FILE_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(descriptor)
    if size > MAX_CONFIG_FILE_BYTES:
        raise ConfigError(str(path), f"larger than {MAX_CONFIG_FILE_BYTES} bytes; is this the right file?")
    return b"".join(chunks)


def _refuse_config_others_may_change(path: Path, info: os.stat_result) -> None:
    """As root: refuse a config file that anyone but root may change, itself (`info`, from the open descriptor) or
    by replacing it through a folder above it (the policy of dmnc.hardening.file_trust; sshd's StrictModes rule)."""
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            str(path),
            f"other users may change this file (mode {stat.S_IMODE(info.st_mode):04o}) while dmnc runs it as "
            f"root; make it writable by its owner only: chmod go-w {path}",
        )
    if info.st_uid != ROOT_UID:
        raise ConfigError(
            str(path),
            f"owned by uid {info.st_uid}, who may change it while dmnc runs it as root; give it to root: "
            f"chown root {path}",
        )
    found = untrusted_path(path)
    if found is not None:
        folder, problem = found
        raise ConfigError(
            str(path),
            f"the folder {folder} is {problem}, so others may replace this file while dmnc runs it as root; "
            f"make the folder root's alone: chown root {folder} && chmod go-w {folder}",
        )


class _ConfigFile:
    """A parsed TOML config file that can say on which line a key was set, for error messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self._lines = text.splitlines()
        try:
            self._data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(str(path), f"not valid TOML: {error}") from None
        self._check_structure()

    @classmethod
    def read(cls, path: Path, named_by: str | None, *, skip_unreadable: bool = False) -> _ConfigFile | None:
        """Read `path`; a missing file is an error only when a flag or variable (`named_by`) asked for it.

        `skip_unreadable` treats a file this user has no permission to read as absent.
        """
        blame = named_by or str(path)
        try:
            data = _read_config_bytes(path)
        except FileNotFoundError:
            if named_by is None:
                return None
            raise ConfigError(named_by, f"config file {str(path)!r} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(blame, f"config file {str(path)!r} is a directory") from None
        except PermissionError:
            if skip_unreadable:
                return None
            raise ConfigError(blame, f"no permission to read config file {str(path)!r}") from None
        except OSError as error:
            raise ConfigError(blame, f"cannot read config file {str(path)!r}: {error.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(str(path), f"not UTF-8 text ({error.reason} at byte {error.start})") from None
        return cls(path, text)

    def source(self, key: tuple[str, ...]) -> str:
        """`path:line (key)` where the line that sets `key` can be found, else `path (key)`."""
        line = self._line_of(key)
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        return f"{where} ({'.'.join(key)})"

    def _line_of(self, key: tuple[str, ...]) -> int | None:
        *tables, name = key
        wanted_table = ".".join(tables)
        current_table = ""
        quoted = re.escape(name)
        assignment = re.compile(rf"""\s*(?:{quoted}|"{quoted}"|'{quoted}')\s*=""")
        header = re.compile(r"\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
        for number, line in enumerate(self._lines, start=1):
            if table := header.match(line):
                current_table = table[1]
            elif current_table == wanted_table and assignment.match(line):
                return number
        return None

    def _check_structure(self) -> None:
        for key, value in self._data.items():
            if key in _TOML_TABLES:
                if not isinstance(value, dict):
                    raise ConfigError(self.source((key,)), f"expected a table [{key}], got {_toml_type(value)}")
                for sub_key in value:
                    if sub_key not in _TOML_TABLES[key]:
                        known = ", ".join(sorted(_TOML_TABLES[key]))
                        raise ConfigError(self.source((key, sub_key)), f"unknown key (known in [{key}]: {known})")
            elif key not in _TOML_TOP_LEVEL_KEYS:
                known = ", ".join(sorted(_TOML_TOP_LEVEL_KEYS | _TOML_TABLES.keys()))
                raise ConfigError(self.source((key,)), f"unknown key (known keys: {known})")
        for option in _OPTIONS:
            value = self.get(option.toml_key)
            if value is not None and not _has_kind(value, option.kind):
                raise ConfigError(
                    self.source(option.toml_key), f"expected {option.kind.value}, got {_toml_type(value)}"
                )

    def get(self, key: tuple[str, ...]) -> object | None:
        node: object = self._data
        for part in key:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


def _has_kind(value: object, kind: _Kind) -> bool:
    if kind is _Kind.TEXT:
        return isinstance(value, str)
    if kind is _Kind.SWITCH:
        return isinstance(value, bool)
    if kind is _Kind.SECONDS:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _toml_type(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a float", list: "an array", dict: "a table"}
    return names.get(type(value), f"a {type(value).__name__}")


@dataclass(frozen=True)
class _Given(Generic[_T]):
    """The winning value of one option, as its layer gave it, with the name of that source for error messages."""

    value: _T
    source: str


class _Layers:
    """Flags, environment and config file; each lookup returns the value of the first layer that has the option.

    Lower layers are not parsed when a higher one wins: a LOG_LEVEL meant for another program does not matter when
    --log-level is given. The file's structure and value types were checked when it was read.
    """

    def __init__(self, flags: ConfigFlags, environ: Mapping[str, str], config_file: _ConfigFile | None) -> None:
        self._flags = flags
        self._environ = environ
        self._file = config_file

    def _environment(self, option: _Option) -> _Given[str] | None:
        for name in option.env:
            if text := self._environ.get(name, ""):
                return _Given(text, name)
        return None

    def _file_value(self, option: _Option) -> _Given[object] | None:
        if self._file is None or (value := self._file.get(option.toml_key)) is None:
            return None
        return _Given(value, self._file.source(option.toml_key))

    def text(self, option: _Option) -> _Given[str] | None:
        flag_value = getattr(self._flags, option.name)
        if isinstance(flag_value, str):
            return _Given(flag_value, option.flag)
        if given := self._environment(option):
            return given
        if (in_file := self._file_value(option)) and isinstance(in_file.value, str):
            return _Given(in_file.value, in_file.source)
        return None

    def switch(self, option: _Option) -> bool:
        if getattr(self._flags, option.name) is True:
            return True
        if given := self._environment(option):
            return _parse_given(given, parse_bool_word)
        in_file = self._file_value(option)
        return in_file is not None and in_file.value is True

    def patterns(self, option: _Option) -> tuple[Pattern, ...]:
        return self._list(option, parse_pattern)

    def cidrs(self, option: _Option) -> tuple[Destination, ...]:
        return self._list(option, parse_cidr)

    def inbound_ports(self, option: _Option) -> tuple[InboundPort, ...]:
        return tuple(sorted(set(self._list(option, parse_inbound_port))))

    def _list(self, option: _Option, parse: Callable[[str], _T]) -> tuple[_T, ...]:
        """A list option: repeated flags, a comma-separated variable or a TOML array, each item parsed."""
        flag_value = getattr(self._flags, option.name)
        given: _Given[list[str]] | None = None
        if isinstance(flag_value, tuple):
            given = _Given(list(flag_value), option.flag)
        elif in_environment := self._environment(option):
            given = _Given(_split_list(in_environment.value), in_environment.source)
        elif (in_file := self._file_value(option)) and isinstance(in_file.value, list):
            given = _Given([str(item) for item in in_file.value], in_file.source)
        if given is None:
            return ()
        try:
            return tuple(parse(text) for text in given.value)
        except (PolicyConfigError, ValueProblem) as error:
            raise ConfigError(given.source, str(error)) from None

    def seconds(self, option: _Option, parse: Callable[[str | float], _T]) -> _T | None:
        """A duration: text from a flag or variable, a TOML integer or float from the file."""
        if given := self.text(option):
            return _parse_given(given, parse)
        if (in_file := self._file_value(option)) and isinstance(in_file.value, int | float):
            return _parse_given(_Given(float(in_file.value), in_file.source), parse)
        return None

    def parsed(self, option: _Option, parse: Callable[[str], _T]) -> _T | None:
        given = self.text(option)
        return None if given is None else _parse_given(given, parse)


_V = TypeVar("_V")


def _parse_given(given: _Given[_V], parse: Callable[[_V], _T]) -> _T:
    try:
        return parse(given.value)
    except ValueProblem as problem:
        raise ConfigError(given.source, str(problem)) from None


def _config_file_path(flags: ConfigFlags, environ: Mapping[str, str]) -> tuple[Path, str | None]:
    """The config file to read and the flag or variable that named it (None for the default path)."""
    if flags.config_file is not None:
        if not flags.config_file:
            raise ConfigError("--config", "the path is empty")
        return Path(flags.config_file), "--config"
    if environ.get("DMNC_CONFIG"):
        return Path(environ["DMNC_CONFIG"]), "DMNC_CONFIG"
    return DEFAULT_CONFIG_PATH, None


def _check_file_socket_path(config_file: _ConfigFile | None) -> None:
    value = config_file.get(_CONTROL_SOCKET.toml_key) if config_file is not None else None
    if config_file is not None and isinstance(value, str) and not value.startswith("/"):
        # Relative to what? The directory dmnc happens to start in is no answer for a file.
        raise ConfigError(
            config_file.source(_CONTROL_SOCKET.toml_key),
            f"the control socket path {value!r} must be absolute in a config file",
        )


def load_config(flags: ConfigFlags, environ: Mapping[str, str]) -> Config:
    """Build the Config from flags > environment > config file > defaults. Raises ConfigError on any bad value."""
    path, named_by = _config_file_path(flags, environ)
    config_file = _ConfigFile.read(path, named_by)
    _check_file_socket_path(config_file)
    layers = _Layers(flags, environ, config_file)
    defaults = Config()
    return Config(
        docker_host=layers.parsed(_DOCKER_HOST, parse_docker_host),
        listen=layers.parsed(_LISTEN, parse_listen) or defaults.listen,
        endpoint=layers.parsed(_ENDPOINT, parse_endpoint),
        setup_image=layers.parsed(_SETUP_IMAGE, parse_image_reference),
        control_socket=layers.parsed(_CONTROL_SOCKET, parse_unix_socket_path) or defaults.control_socket,
        keep_vm_config=layers.switch(_KEEP_VM_CONFIG),
        log_level=layers.parsed(_LOG_LEVEL, parse_log_level) or defaults.log_level,
        vm_stale_after=layers.seconds(_VM_STALE_AFTER, parse_vm_stale_after) or defaults.vm_stale_after,
        routes=PolicyConfig(
            include=layers.patterns(_ROUTE_INCLUDE),
            exclude=layers.patterns(_ROUTE_EXCLUDE),
            force=layers.switch(_FORCE_ROUTES),
            allow=layers.cidrs(_ROUTE_ALLOW),
            over=layers.cidrs(_ROUTE_OVER),
        ),
        inbound_allow=layers.inbound_ports(_ALLOW_INBOUND),
        config_file=config_file.path if config_file is not None else None,
        dns_domain=layers.parsed(_DNS_DOMAIN, parse_dns_domain) or defaults.dns_domain,
        dns_enabled=not layers.switch(_NO_DNS),
        path=layers.parsed(_PATH, parse_path) or defaults.path,
    )


def load_control_socket_path(flag: str | None, environ: Mapping[str, str]) -> Path:
    """The control socket for clients (`dmnc status`): flag > DMNC_CONTROL_SOCKET > config file > default.

    Only that one option is looked at. Clients run without root: a config file they may not read is skipped, since
    the default socket path is then the best guess left.
    """
    flags = ConfigFlags(control_socket=flag)
    config_file: _ConfigFile | None = None
    if flag is None and not environ.get("DMNC_CONTROL_SOCKET"):
        path, named_by = _config_file_path(flags, environ)
        config_file = _ConfigFile.read(path, named_by, skip_unreadable=True)
        _check_file_socket_path(config_file)
    return _Layers(flags, environ, config_file).parsed(_CONTROL_SOCKET, parse_unix_socket_path) or (
        DEFAULT_CONTROL_SOCKET
    )
