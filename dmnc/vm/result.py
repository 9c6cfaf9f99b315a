"""The setup script's machine-readable result line, parsed from untrusted container output.

Format (documented in dmnc/vm/setup.sh; one line, space-separated `key=value` fields, no spaces inside values):

    dmnc-setup-result v1 nonce=HEX mode=MODE public-key=KEY endpoint=ADDR:PORT endpoint-name=NAME ipv6=on|off
        kernel=RELEASE [shims-failed=LINK,...] [direct=IF/VMADDR/HOSTADDR,...]      (all on one line)
    dmnc-setup-result v1 nonce=HEX mode=kernel-missing kernel=RELEASE
    dmnc-setup-result v1 nonce=HEX mode=removed kernel=RELEASE
    dmnc-setup-result v1 nonce=HEX mode=kernel-ok kernel=RELEASE     (check mode: the kernel can make WireGuard links)
    dmnc-setup-result v1 nonce=HEX mode=foreign interface=NAME kernel=RELEASE   (NAME is another tool's: untouched)

Setup results may end in ` shims-failed=LINK,...`; setup and check results in ` docker-nftables=marked|unmarked` when
the VM's Docker runs its nftables firewall backend (DockerNftables).

HEX is the nonce dmnc passed to this run (`--nonce`): a line carrying another, or none, is not this run's answer and
is refused. MODE is kernel or userspace; IPv6 endpoints are written `[ADDR]:PORT`; `ipv6=off` means an IPv4-only
tunnel.
Failures are a line `dmnc-setup: error: REASON` instead. Functions ending in `_untrusted` take bytes from the
container and raise only SetupResultError / SetupScriptError.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from dmnc.vm.errors import SetupParamsError, SetupResultError, SetupScriptError
from dmnc.vm.nftables import DockerNftables
from dmnc.vm.params import decode_public_key, is_host_name
from dmnc.vm.shims import SHIM_LINK_PREFIX

RESULT_PREFIX = "dmnc-setup-result"
RESULT_VERSION = "v1"
ERROR_PREFIX = "dmnc-setup: error: "
# A result line is ~200 characters, at most ~1200 with every shim (MAX_REPORTED_SHIMS) and direct link
# (MAX_REPORTED_DIRECT in dmnc/vm/setup.sh) listed; anything far longer is not one of ours.
MAX_RESULT_LINE = 2048
MAX_REASON_LENGTH = 500
# uname -r: release strings are letters, digits and ._+~- (e.g. "6.1.0-18-cloud-amd64", "6.10.14-linuxkit").
_KERNEL_RELEASE = re.compile(r"[A-Za-z0-9._+~-]{1,128}")
_SHIM_LINK = re.compile(rf"{SHIM_LINK_PREFIX}[A-Za-z0-9_.-]{{1,10}}")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
# An interface name as setup.sh accepts it for --interface: at most 15 characters (IFNAMSIZ is 16 with the NUL,
# linux/if.h), letters, digits and _.- not starting with . or -.
_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")

_IPV6_VALUES = {"on": True, "off": False}
SHIMS_FAILED_FIELD = "shims-failed"
DIRECT_FIELD = "direct"
# MAX_REPORTED_DIRECT in dmnc/vm/setup.sh.
MAX_DIRECT_LINKS = 4
DOCKER_NFTABLES_FIELD = "docker-nftables"

HostPeerEndpoint = tuple[str, int]
"""(IP address, UDP port) of the host's WireGuard peer as the VM dials it: chip0's peer endpoint inside the VM, an
address in the VM's view of the network (resolved there from the endpoint name), not necessarily one the host has."""


class VmMode(enum.Enum):
    """How the VM end of the tunnel runs."""

    KERNEL = "kernel"
    USERSPACE = "userspace"


@dataclass(frozen=True, slots=True)
class DirectLink:
    """A link the VM shares with the host, as the setup script found it (a connected route to one of the host's
    addresses) and opened with the tunnel's rules: the VM's interface, its address there, and the host's."""

    vm_interface: str
    vm_address: ipaddress.IPv4Address | ipaddress.IPv6Address
    host_address: ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class SetupResult:
    """chip0 is configured: its public key, the host endpoint it sends to, and what runs it. `ipv6` is False for an
    IPv4-only tunnel (no IPv6 tunnel addresses requested, or IPv6 disabled in the VM)."""

    mode: VmMode
    vm_public_key: bytes
    endpoint: HostPeerEndpoint
    endpoint_name: str
    kernel_release: str
    ipv6: bool
    shims_failed: tuple[str, ...] = ()
    """The macvlan/ipvlan shim links (SetupParams.shims) the script could not make: parent missing or down, no
    free address, a clashing route. Reported, not fatal."""
    direct_links: tuple[DirectLink, ...] = ()
    """The links to the host's addresses (SetupParams.direct_hosts) that carry the direct path's rules in the VM."""
    docker_nftables: DockerNftables | None = None
    """None when the VM's Docker uses iptables (or the image has no `nft` to tell)."""


@dataclass(frozen=True, slots=True)
class KernelWireGuardMissing:
    """The VM kernel cannot create WireGuard interfaces: the userspace fallback container is needed."""

    kernel_release: str
    docker_nftables: DockerNftables | None = None
    """Check mode only: Docker's nftables backend, as in SetupResult."""


@dataclass(frozen=True, slots=True)
class KernelWireGuardPresent:
    """Check mode: the VM kernel created (and the script deleted again) a WireGuard interface."""

    kernel_release: str
    docker_nftables: DockerNftables | None = None
    """Docker's nftables backend, as in SetupResult."""


@dataclass(frozen=True, slots=True)
class TeardownDone:
    """chip0 and the rules are gone."""

    kernel_release: str


@dataclass(frozen=True, slots=True)
class ForeignInterface:
    """The VM interface exists without dmnc's mark (another tool's, e.g. docker-mac-net-connect's chip0): the
    script changed nothing."""

    interface: str
    kernel_release: str


ScriptOutcome = SetupResult | KernelWireGuardMissing | KernelWireGuardPresent | TeardownDone | ForeignInterface

_FIELDS_BY_MODE: dict[str, frozenset[str]] = {
    "kernel": frozenset({"mode", "public-key", "endpoint", "endpoint-name", "ipv6", "kernel"}),
    "userspace": frozenset({"mode", "public-key", "endpoint", "endpoint-name", "ipv6", "kernel"}),
    "kernel-missing": frozenset({"mode", "kernel"}),
    "removed": frozenset({"mode", "kernel"}),
    "kernel-ok": frozenset({"mode", "kernel"}),
    "foreign": frozenset({"mode", "interface", "kernel"}),
}
# Fields a result carries only when there is something to say, by mode.
_OPTIONAL_FIELDS_BY_MODE: dict[str, frozenset[str]] = {
    "kernel": frozenset({SHIMS_FAILED_FIELD, DIRECT_FIELD, DOCKER_NFTABLES_FIELD}),
    "userspace": frozenset({SHIMS_FAILED_FIELD, DIRECT_FIELD, DOCKER_NFTABLES_FIELD}),
    "kernel-missing": frozenset({DOCKER_NFTABLES_FIELD}),
    "kernel-ok": frozenset({DOCKER_NFTABLES_FIELD}),
}


def _parse_endpoint_untrusted(text: str) -> HostPeerEndpoint:
    if text.startswith("["):
        address_text, separator, port_text = text[1:].partition("]:")
        version = 6
    else:
        address_text, separator, port_text = text.rpartition(":")
        version = 4
    if not separator or not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        raise SetupResultError(f"result endpoint {text!r} is not ADDRESS:PORT")
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        raise SetupResultError(f"result endpoint {text!r} has no valid IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise SetupResultError(f"result endpoint {text!r} has a scope id: not reachable from the host")
    if address.version != version:
        raise SetupResultError(f"result endpoint {text!r}: IPv6 must be bracketed, IPv4 must not")
    return (str(address), int(port_text))


def _parse_fields_untrusted(tokens: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for token in tokens:
        key, separator, value = token.partition("=")
        if not separator or not key or not value:
            raise SetupResultError(f"result field {token[:80]!r} is not key=value")
        if key in fields:
            raise SetupResultError(f"result field {key[:40]!r} appears twice")
        fields[key] = value
    return fields


def _is_address_or_host_name(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return is_host_name(text)
    return True


def _check_nonce_untrusted(fields: dict[str, str], nonce: str) -> None:
    received = fields.pop("nonce", None)
    if received is None:
        raise SetupResultError("result line carries no nonce: it was not printed by this run of the setup script")
    if received != nonce:
        raise SetupResultError(
            f"result line carries the nonce {received[:40]!r}, not this run's: it comes from another container or run"
        )


_SETUP_MODES = frozenset(mode.value for mode in VmMode)


def _outcome_without_tunnel_untrusted(mode: str, fields: dict[str, str], kernel_release: str) -> ScriptOutcome:
    """The outcome of a mode that configured no tunnel (its fields already checked for presence)."""
    if mode == "kernel-missing":
        return KernelWireGuardMissing(kernel_release, _parse_docker_nftables_untrusted(fields))
    if mode == "removed":
        return TeardownDone(kernel_release)
    if mode == "kernel-ok":
        return KernelWireGuardPresent(kernel_release, _parse_docker_nftables_untrusted(fields))
    interface = fields["interface"]
    if not _INTERFACE_NAME.fullmatch(interface):
        raise SetupResultError(f"result interface name {interface[:40]!r} is malformed")
    return ForeignInterface(interface, kernel_release)


def parse_result_line_untrusted(line: str, *, nonce: str) -> ScriptOutcome:
    """Parse one result line of the run that was given `nonce`; SetupResultError names what is wrong with it."""
    if len(line) > MAX_RESULT_LINE:
        raise SetupResultError(f"result line is {len(line)} characters long, more than {MAX_RESULT_LINE}")
    tokens = line.strip().split(" ")
    if len(tokens) < 2 or tokens[0] != RESULT_PREFIX:
        raise SetupResultError(f"not a result line: {line[:80]!r}")
    if tokens[1] != RESULT_VERSION:
        raise SetupResultError(f"result line version {tokens[1][:20]!r}, expected {RESULT_VERSION} (image mismatch?)")
    fields = _parse_fields_untrusted(tokens[2:])
    _check_nonce_untrusted(fields, nonce)
    mode = fields.get("mode")
    if mode not in _FIELDS_BY_MODE:
        raise SetupResultError(f"result mode {str(mode)[:40]!r} is unknown")
    expected = _FIELDS_BY_MODE[mode]
    optional = _OPTIONAL_FIELDS_BY_MODE.get(mode, frozenset())
    if fields.keys() - optional != expected:
        missing = sorted(expected - fields.keys())
        unexpected = sorted(fields.keys() - expected - optional)
        raise SetupResultError(f"result line for mode {mode}: missing {missing}, unexpected {unexpected}")
    kernel_release = fields["kernel"]
    if not _KERNEL_RELEASE.fullmatch(kernel_release):
        raise SetupResultError(f"result kernel release {kernel_release[:80]!r} is malformed")
    if mode not in _SETUP_MODES:
        return _outcome_without_tunnel_untrusted(mode, fields, kernel_release)
    try:
        vm_public_key = decode_public_key(fields["public-key"])
    except SetupParamsError as error:
        raise SetupResultError(f"result public key: {error}") from None
    endpoint_name = fields["endpoint-name"]
    if not _is_address_or_host_name(endpoint_name):
        raise SetupResultError(f"result endpoint name {endpoint_name[:80]!r} is malformed")
    ipv6 = _IPV6_VALUES.get(fields["ipv6"])
    if ipv6 is None:
        raise SetupResultError(f"result field ipv6 {fields['ipv6'][:20]!r} is not on or off")
    return SetupResult(
        mode=VmMode(mode),
        vm_public_key=vm_public_key,
        endpoint=_parse_endpoint_untrusted(fields["endpoint"]),
        endpoint_name=endpoint_name,
        kernel_release=kernel_release,
        ipv6=ipv6,
        shims_failed=_parse_shim_links_untrusted(fields.get(SHIMS_FAILED_FIELD)),
        direct_links=parse_direct_links_untrusted(fields.get(DIRECT_FIELD)),
        docker_nftables=_parse_docker_nftables_untrusted(fields),
    )


def _parse_docker_nftables_untrusted(fields: dict[str, str]) -> DockerNftables | None:
    text = fields.get(DOCKER_NFTABLES_FIELD)
    if text is None:
        return None
    try:
        return DockerNftables(text)
    except ValueError:
        raise SetupResultError(f"result field {DOCKER_NFTABLES_FIELD} {text[:20]!r}: not marked or unmarked") from None


def _parse_shim_links_untrusted(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    links = tuple(text.split(","))
    for link in links:
        if not _SHIM_LINK.fullmatch(link):
            raise SetupResultError(f"result field {SHIMS_FAILED_FIELD} names {link[:40]!r}, not a shim link")
    return links


def _direct_address_untrusted(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise SetupResultError(f"result field {DIRECT_FIELD}: {text[:40]!r} is not an IP address") from None
    if (
        (isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None)
        or address.is_unspecified
        or address.is_loopback
        or address.is_multicast
        or address.is_link_local
        or (isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None)
    ):
        raise SetupResultError(f"result field {DIRECT_FIELD}: {address} cannot be a direct path's address")
    return address


def parse_direct_links_untrusted(text: str | None) -> tuple[DirectLink, ...]:
    """The `direct=IF/VMADDR/HOSTADDR,...` field: at most MAX_DIRECT_LINKS distinct links, each a valid interface
    name and two unicast addresses of one family that differ."""
    if text is None:
        return ()
    entries = text.split(",")
    if len(entries) > MAX_DIRECT_LINKS:
        raise SetupResultError(f"result field {DIRECT_FIELD} lists {len(entries)} links, more than {MAX_DIRECT_LINKS}")
    links: list[DirectLink] = []
    for entry in entries:
        parts = entry.split("/")
        if len(parts) != 3 or not _INTERFACE_NAME.fullmatch(parts[0]):
            raise SetupResultError(f"result field {DIRECT_FIELD}: {entry[:80]!r} is not IF/VMADDR/HOSTADDR")
        vm_address, host_address = _direct_address_untrusted(parts[1]), _direct_address_untrusted(parts[2])
        if vm_address.version != host_address.version or vm_address == host_address:
            raise SetupResultError(f"result field {DIRECT_FIELD}: {entry[:80]!r} needs two addresses of one family")
        link = DirectLink(parts[0], vm_address, host_address)
        if link in links:
            raise SetupResultError(f"result field {DIRECT_FIELD} lists {entry[:80]!r} twice")
        links.append(link)
    return tuple(links)


def _printable(text: str) -> str:
    cleaned = "".join(character if character.isprintable() else "?" for character in text)
    return cleaned[:MAX_REASON_LENGTH]


def outcome_from_output_untrusted(output: bytes | str, exit_code: int | None = None, *, nonce: str) -> ScriptOutcome:
    """The outcome of a script run given `nonce` from its whole output (stdout and stderr, merged or not).

    The script's own error line wins (SetupScriptError with its reason); a non-zero exit without one is reported
    with the output's last line; otherwise the last result line is parsed (SetupResultError when there is none, or
    when it does not carry `nonce`).
    """
    text = output.decode("utf-8", errors="replace") if isinstance(output, bytes) else output
    lines = text.splitlines()
    error_lines = [line for line in lines if line.startswith(ERROR_PREFIX)]
    if error_lines:
        raise SetupScriptError(_printable(error_lines[-1].removeprefix(ERROR_PREFIX)), exit_code)
    if exit_code not in (None, 0):
        last_line = next((line for line in reversed(lines) if line.strip()), "no output")
        raise SetupScriptError(_printable(last_line.strip()), exit_code)
    result_lines = [line for line in lines if line.startswith(RESULT_PREFIX + " ")]
    if not result_lines:
        raise SetupResultError("the setup script printed no result line")
    return parse_result_line_untrusted(result_lines[-1], nonce=nonce)
