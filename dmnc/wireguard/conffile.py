"""Standard WireGuard configuration files, as read by `wg setconf` (wg(8)) plus wg-quick's Address and MTU.

    [Interface]
    PrivateKey = <base64>
    ListenPort = 51820
    Address = 10.44.0.1/24, fd00:44::1/64
    MTU = 1420

    [Peer]
    PublicKey = <base64>
    PresharedKey = <base64>
    Endpoint = 192.0.2.1:51820          # or [2001:db8::1]:51820 or host.example:51820
    AllowedIPs = 10.44.0.2/32, fd00:44::2/128
    PersistentKeepalive = 25             # or off

Keys are case-insensitive, values may repeat (Address and AllowedIPs accumulate), `#` starts a comment. wg-quick's
keys that dmnc does not act on (DNS, Table, PreUp, ...) are reported in `ignored_keys` rather than refused, so an
existing wg-quick file works; anything else unknown is an error. Every error names the file, the line and the reason.
Parsing is pure: host names in Endpoint are resolved by the caller.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dmnc.wireguard.keys import KeyFormatError, decode_key

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_Item = TypeVar("_Item")

MAX_PORT = 65535
# RFC 791: every IPv4 host must accept 68-byte datagrams; the largest IP packet is 65535 bytes.
MIN_MTU = 68
MAX_MTU = 65535
# wg(8) PersistentKeepalive: "a seconds interval, between 1 and 65535 inclusive, of how often to send an
# authenticated empty packet", 0 or "off" disables it.
MAX_PERSISTENT_KEEPALIVE = 65535
# Keys wg-quick(8) understands that change how it sets up the host, not the WireGuard session.
WG_QUICK_ONLY_KEYS = frozenset({"dns", "table", "preup", "postup", "predown", "postdown", "saveconfig", "fwmark"})


class ConfFileError(ValueError):
    """A configuration file is unreadable or wrong; `str()` is `FILE:LINE: reason`."""

    def __init__(self, filename: str, line: int | None, reason: str) -> None:
        where = f"{filename}:{line}" if line is not None else filename
        super().__init__(f"{where}: {reason}")
        self.filename = filename
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class InterfaceSection:
    private_key: bytes
    listen_port: int | None = None  # None: any free port
    addresses: tuple[IPInterface, ...] = ()
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class PeerSection:
    public_key: bytes
    preshared_key: bytes | None = None
    endpoint: tuple[str, int] | None = None  # host (IP literal or name, unresolved) and port
    allowed_ips: tuple[IPNetwork, ...] = ()
    persistent_keepalive: int = 0
    line: int = 0  # where the [Peer] header is, for errors found later (e.g. an unresolvable host)


@dataclass(frozen=True, slots=True)
class WireGuardConfig:
    interface: InterfaceSection
    peers: tuple[PeerSection, ...]
    ignored_keys: tuple[str, ...] = field(default=())


def load_conffile(path: str | Path) -> WireGuardConfig:
    """Read and parse a configuration file; raises ConfFileError (also for an unreadable file)."""
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfFileError(filename, None, f"cannot read: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ConfFileError(filename, None, f"not UTF-8 text: {error.reason}") from error
    return parse_conffile(text, filename)


class _SectionBuilder:
    """Values of one section as they accumulate."""

    def __init__(self, kind: str, line: int) -> None:
        self.kind = kind
        self.line = line
        self.keys_seen: set[str] = set()
        self.private_key: bytes | None = None
        self.listen_port: int | None = None
        self.mtu: int | None = None
        self.addresses: list[IPInterface] = []
        self.public_key: bytes | None = None
        self.preshared_key: bytes | None = None
        self.endpoint: tuple[str, int] | None = None
        self.allowed_ips: list[IPNetwork] = []
        self.persistent_keepalive = 0


def parse_conffile(text: str, filename: str = "<config>") -> WireGuardConfig:
    """Parse configuration text; raises ConfFileError naming `filename`, the line and the reason."""
    sections: list[_SectionBuilder] = []
    ignored: list[str] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfFileError(filename, number, f"unterminated section header {line!r}")
            kind = line[1:-1].strip().lower()
            if kind not in ("interface", "peer"):
                raise ConfFileError(filename, number, f"unknown section [{line[1:-1].strip()}]")
            if kind == "interface" and any(section.kind == "interface" for section in sections):
                raise ConfFileError(filename, number, "a second [Interface] section")
            sections.append(_SectionBuilder(kind, number))
            continue
        key, equals, value = line.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not equals or not key:
            raise ConfFileError(filename, number, f"expected `Key = Value`, got {line!r}")
        if not sections:
            raise ConfFileError(filename, number, f"`{key}` outside of a section")
        section = sections[-1]
        try:
            _set_value(section, key, value, ignored)
        except ValueError as error:
            raise ConfFileError(filename, number, str(error)) from None
    return _build(sections, filename, ignored)


_INTERFACE_KEYS = frozenset({"privatekey", "listenport", "mtu", "address"})
_PEER_KEYS = frozenset({"publickey", "presharedkey", "endpoint", "allowedips", "persistentkeepalive"})
_REPEATABLE_KEYS = frozenset({"address", "allowedips"})


def _set_value(section: _SectionBuilder, key: str, value: str, ignored: list[str]) -> None:
    known = _INTERFACE_KEYS if section.kind == "interface" else _PEER_KEYS
    if key not in known:
        if section.kind == "interface" and key in WG_QUICK_ONLY_KEYS:
            ignored.append(key)
            return
        raise ValueError(f"unknown key `{key}` in [{section.kind.capitalize()}]")
    if key in section.keys_seen and key not in _REPEATABLE_KEYS:
        raise ValueError(f"`{key}` given twice in this section")
    section.keys_seen.add(key)
    match key:
        case "privatekey":
            section.private_key = _parse_key(value)
        case "listenport":
            section.listen_port = _parse_int(value, "ListenPort", 0, MAX_PORT)
        case "mtu":
            section.mtu = _parse_int(value, "MTU", MIN_MTU, MAX_MTU)
        case "address":
            section.addresses.extend(_parse_list(value, _parse_interface_address))
        case "publickey":
            section.public_key = _parse_key(value)
        case "presharedkey":
            section.preshared_key = _parse_key(value)
        case "endpoint":
            section.endpoint = _parse_endpoint(value)
        case "allowedips":
            section.allowed_ips.extend(_parse_list(value, _parse_network))
        case "persistentkeepalive":
            section.persistent_keepalive = _parse_keepalive(value)


def _parse_key(value: str) -> bytes:
    try:
        return decode_key(value)
    except KeyFormatError as error:
        raise ValueError(str(error)) from None


def _parse_int(value: str, what: str, low: int, high: int) -> int:
    if not value.isdigit() or not value.isascii():
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise ValueError(f"{what} must be between {low} and {high}, got {number}")
    return number


def _parse_keepalive(value: str) -> int:
    if value.lower() == "off":
        return 0
    return _parse_int(value, "PersistentKeepalive", 0, MAX_PERSISTENT_KEEPALIVE)


def _parse_endpoint(value: str) -> tuple[str, int]:
    """`host:port` or `[ipv6]:port`, as wg(8) accepts; the port is required."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"Endpoint {value!r}: expected [IPv6 address]:port")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"Endpoint {value!r}: {host!r} is not an IPv6 address") from None
        port_text = rest[1:]
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon or not host:
            raise ValueError(f"Endpoint {value!r}: expected host:port")
        if ":" in host:
            raise ValueError(f"Endpoint {value!r}: an IPv6 address needs brackets, [address]:port")
        if any(character.isspace() for character in host):
            raise ValueError(f"Endpoint {value!r}: the host contains whitespace")
    return host, _parse_int(port_text, "the Endpoint port", 1, MAX_PORT)


def _parse_interface_address(item: str) -> IPInterface:
    try:
        return ipaddress.ip_interface(item)
    except ValueError:
        raise ValueError(f"Address {item!r} is not an IP address with an optional /prefix") from None


def _parse_network(item: str) -> IPNetwork:
    try:
        # wg(8) masks host bits off (10.0.0.1/24 means 10.0.0.0/24) rather than refusing them.
        return ipaddress.ip_network(item, strict=False)
    except ValueError:
        raise ValueError(f"AllowedIPs entry {item!r} is not an IP network") from None


def _parse_list(value: str, parse_item: Callable[[str], _Item]) -> list[_Item]:
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise ValueError(f"empty entry in the list {value!r}")
    return [parse_item(item) for item in items]


def _build(sections: list[_SectionBuilder], filename: str, ignored: list[str]) -> WireGuardConfig:
    interfaces = [section for section in sections if section.kind == "interface"]
    if not interfaces:
        raise ConfFileError(filename, None, "no [Interface] section")
    interface = interfaces[0]
    if interface.private_key is None:
        raise ConfFileError(filename, interface.line, "[Interface] has no PrivateKey")
    peers: list[PeerSection] = []
    seen: dict[bytes, int] = {}
    for section in sections:
        if section.kind != "peer":
            continue
        if section.public_key is None:
            raise ConfFileError(filename, section.line, "[Peer] has no PublicKey")
        if section.public_key in seen:
            raise ConfFileError(
                filename, section.line, f"the same PublicKey as the [Peer] on line {seen[section.public_key]}"
            )
        seen[section.public_key] = section.line
        peers.append(
            PeerSection(
                public_key=section.public_key,
                preshared_key=section.preshared_key,
                endpoint=section.endpoint,
                allowed_ips=tuple(section.allowed_ips),
                persistent_keepalive=section.persistent_keepalive,
                line=section.line,
            )
        )
    return WireGuardConfig(
        InterfaceSection(
            private_key=interface.private_key,
            listen_port=interface.listen_port,
            addresses=tuple(interface.addresses),
            mtu=interface.mtu,
        ),
        tuple(peers),
        tuple(ignored),
    )
