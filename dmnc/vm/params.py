"""Inputs of the VM-side setup and the container command that carries them.

`SetupParams` holds only public values (the host's public key, where the VM can reach the host, the tunnel
addresses): the VM private key is generated inside the VM by the script. `script_command` turns them into the
container's argv: `sh -c SCRIPT dmnc-setup MODE --nonce HEX --option value ...`, each value its own argv item, so no
input is ever interpolated into shell code (and every value is validated here first anyway). The nonce is fresh for
each run (`new_run_nonce`): the script echoes it in its result line and the parser accepts only that run's line.
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import re
import secrets
from dataclasses import dataclass

from dmnc.tunnel.flowfilter import InboundPort
from dmnc.vm.assets import setup_script
from dmnc.vm.errors import SetupParamsError
from dmnc.vm.shims import SHIM_LINK_PREFIX, Shim
from dmnc.wireguard.constants import DEFAULT_MTU

# Names the Docker VMs give the host: Docker Desktop, Lima (Colima, Rancher Desktop), Podman machine.
DEFAULT_ENDPOINT_CANDIDATES = ("host.docker.internal", "host.lima.internal", "host.containers.internal")
DEFAULT_INTERFACE = "chip0"
# The point-to-point pair docker-mac-net-connect uses; the IPv6 pair is a ULA (RFC 4193) in fd33:33:33::/48.
DEFAULT_HOST_ADDRESS = ipaddress.IPv4Address("10.33.33.1")
DEFAULT_VM_ADDRESS = ipaddress.IPv4Address("10.33.33.2")
DEFAULT_HOST_ADDRESS6 = ipaddress.IPv6Address("fd33:33:33::1")
DEFAULT_VM_ADDRESS6 = ipaddress.IPv6Address("fd33:33:33::2")
# IPv4 hosts must accept 576-byte datagrams (RFC 791); IPv6 links need at least 1280 (RFC 8200 section 5).
MIN_MTU_IPV4 = 576
MIN_MTU_IPV6 = 1280
MAX_MTU = 65535
WIREGUARD_KEY_LENGTH = 32
# argv[0] of the script inside `sh -c`: what `$0` and error messages show.
SCRIPT_NAME = "dmnc-setup"
# 128 random bits per run (the size `secrets` documents as enough against guessing): a result line echoing this run's
# nonce was printed by the script of this run, not by another container or an earlier run. setup.sh checks the form.
RUN_NONCE_BYTES = 16
_RUN_NONCE = re.compile(rf"[0-9a-f]{{{2 * RUN_NONCE_BYTES}}}")

# Linux IFNAMSIZ is 16 including the NUL (include/uapi/linux/if.h); no leading '-' so it is never an option.
_INTERFACE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
# RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, at most 63 characters each.
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MAX_HOST_NAME = 253


class ScriptMode(enum.Enum):
    """The setup script's entry points (see the header of dmnc/vm/setup.sh)."""

    SETUP = "setup"
    USERSPACE = "userspace"
    TEARDOWN = "teardown"
    # Changes nothing lasting: tests whether the VM kernel can create a WireGuard link (used by `dmnc doctor`).
    CHECK = "check"


class IptablesBackend(enum.Enum):
    """Which iptables the script edits; AUTO picks the one holding Docker's chains."""

    AUTO = "auto"
    LEGACY = "legacy"
    NFT = "nft"


def is_host_name(text: str) -> bool:
    """True for an RFC 1123 host name (not an IP literal check: call ipaddress for that)."""
    if not text or len(text) > _MAX_HOST_NAME:
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in text.removesuffix(".").split("."))


def _check_endpoint_host(text: str, what: str) -> None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        if not is_host_name(text):
            raise SetupParamsError(f"{what} {text!r} is neither an IP address nor a host name") from None
        return
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        # A zone names an interface of the machine it was written on: it means nothing inside the VM.
        raise SetupParamsError(f"{what} {text!r} has an IPv6 zone, which the VM cannot use")


@dataclass(frozen=True, slots=True)
class TeardownParams:
    """What teardown needs to find dmnc's interface and rules; the defaults match SetupParams' defaults."""

    host_address: ipaddress.IPv4Address = DEFAULT_HOST_ADDRESS
    host_address6: ipaddress.IPv6Address | None = DEFAULT_HOST_ADDRESS6
    interface: str = DEFAULT_INTERFACE
    iptables: IptablesBackend = IptablesBackend.AUTO

    def __post_init__(self) -> None:
        _check_interface_name(self.interface)


def _check_interface_name(name: str) -> None:
    if not _INTERFACE_NAME.fullmatch(name):
        raise SetupParamsError(f"interface name {name!r} must be 1-15 letters, digits, '_', '.' or '-' (not first)")


def _check_shim(shim: Shim) -> None:
    _check_interface_name(shim.link)
    _check_interface_name(shim.parent)
    if not shim.link.startswith(SHIM_LINK_PREFIX):
        raise SetupParamsError(f"shim link {shim.link!r} must start with {SHIM_LINK_PREFIX!r} (teardown finds it so)")
    if shim.parent.startswith(SHIM_LINK_PREFIX):
        raise SetupParamsError(f"shim parent {shim.parent!r} is itself a shim")
    if not shim.addresses or (not shim.probe and len(shim.addresses) != 1):
        raise SetupParamsError(f"shim {shim.link}: one reserved address, or one or more to probe")
    if any(address.version != shim.route.version for address in shim.addresses):
        raise SetupParamsError(f"shim {shim.link}: its addresses and its route are of different IP versions")
    if shim.probe and shim.route.version == 6:
        raise SetupParamsError(f"shim {shim.link}: IPv6 shim addresses are reserved, never probed")
    if shim.probe and not shim.kind.probes:
        raise SetupParamsError(f"shim {shim.link}: an {shim.kind.value} link cannot probe for an address (no ARP)")


# MAX_DIRECT_HOSTS in dmnc/vm/setup.sh.
MAX_DIRECT_HOSTS = 16


def _check_direct_hosts(
    hosts: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...],
    tunnel: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, ...],
) -> None:
    if len(hosts) > MAX_DIRECT_HOSTS:
        raise SetupParamsError(f"{len(hosts)} direct-path host addresses, more than {MAX_DIRECT_HOSTS}")
    for host in hosts:
        if isinstance(host, ipaddress.IPv6Address) and host.scope_id is not None:
            raise SetupParamsError(f"direct-path host address {host} has an IPv6 zone, which the VM cannot use")
        if host.is_unspecified or host.is_loopback or host.is_multicast or host.is_link_local or host in tunnel:
            raise SetupParamsError(f"{host} cannot be a direct path's host address")


def shim_argument(shim: Shim) -> str:
    """The value of one `--shim`: LINK,KIND,PARENT,ROUTE,reserved|probe,ADDRESS[,ADDRESS...] (interface names hold
    no commas: _INTERFACE_NAME)."""
    how = "probe" if shim.probe else "reserved"
    addresses = ",".join(str(address) for address in shim.addresses)
    return f"{shim.link},{shim.kind.value},{shim.parent},{shim.route},{how},{addresses}"


@dataclass(frozen=True, slots=True)
class SetupParams:
    """Everything the setup script needs, all public. Validated on construction (SetupParamsError)."""

    host_public_key: bytes
    port: int
    endpoint: str | None = None
    """An explicit host address (or name) as the VM sees it; None tries `endpoint_candidates` in order."""
    endpoint_candidates: tuple[str, ...] = DEFAULT_ENDPOINT_CANDIDATES
    host_address: ipaddress.IPv4Address = DEFAULT_HOST_ADDRESS
    vm_address: ipaddress.IPv4Address = DEFAULT_VM_ADDRESS
    host_address6: ipaddress.IPv6Address | None = DEFAULT_HOST_ADDRESS6
    vm_address6: ipaddress.IPv6Address | None = DEFAULT_VM_ADDRESS6
    mtu: int = DEFAULT_MTU
    interface: str = DEFAULT_INTERFACE
    iptables: IptablesBackend = IptablesBackend.AUTO
    allow_inbound: tuple[InboundPort, ...] = ()
    """Host ports containers may open connections to: the VM forwards new connections towards the tunnel only to
    these (`--allow-inbound`)."""
    shims: tuple[Shim, ...] = ()
    """The macvlan/ipvlan shims the VM should have (dmnc.vm.shims.plan_shims): every setup run recreates exactly
    these and removes any other."""
    direct_hosts: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    """The host's own addresses (never its tunnel's): links the VM shares with one of them get the direct path's
    rules, and are reported (SetupResult.direct_links)."""

    def __post_init__(self) -> None:
        if len(self.host_public_key) != WIREGUARD_KEY_LENGTH:
            raise SetupParamsError(
                f"host public key must be {WIREGUARD_KEY_LENGTH} bytes, got {len(self.host_public_key)}"
            )
        if not 1 <= self.port <= 65535:
            raise SetupParamsError(f"port {self.port} is outside 1-65535")
        if self.endpoint is not None:
            _check_endpoint_host(self.endpoint, "endpoint")
        elif not self.endpoint_candidates:
            raise SetupParamsError("no endpoint and no endpoint candidates: the VM could not find the host")
        for candidate in self.endpoint_candidates:
            _check_endpoint_host(candidate, "endpoint candidate")
        if (self.host_address6 is None) != (self.vm_address6 is None):
            raise SetupParamsError("give both IPv6 tunnel addresses or neither")
        if self.host_address == self.vm_address or (
            self.host_address6 is not None and self.host_address6 == self.vm_address6
        ):
            raise SetupParamsError("the host and VM tunnel addresses must differ")
        minimum_mtu = MIN_MTU_IPV4 if self.host_address6 is None else MIN_MTU_IPV6
        if not minimum_mtu <= self.mtu <= MAX_MTU:
            raise SetupParamsError(f"MTU {self.mtu} is outside {minimum_mtu}-{MAX_MTU}")
        _check_interface_name(self.interface)
        for inbound in self.allow_inbound:
            if not 1 <= inbound.port <= 65535 or inbound.protocol not in {"tcp", "udp"}:
                raise SetupParamsError(f"inbound port {inbound.port}/{inbound.protocol} is not PORT/tcp or PORT/udp")
        for shim in self.shims:
            _check_shim(shim)
        _check_direct_hosts(self.direct_hosts, (self.host_address, self.host_address6))

    @property
    def host_public_key_base64(self) -> str:
        return base64.b64encode(self.host_public_key).decode("ascii")

    @property
    def teardown_params(self) -> TeardownParams:
        """What a teardown of this setup needs."""
        return TeardownParams(self.host_address, self.host_address6, self.interface, self.iptables)


def decode_public_key(text: str) -> bytes:
    """Decode a WireGuard base64 key (44 characters, 32 bytes); raises SetupParamsError when it is not one."""
    try:
        key = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SetupParamsError(f"{text!r} is not base64") from None
    if len(key) != WIREGUARD_KEY_LENGTH or len(text) != 44:
        raise SetupParamsError(f"{text!r} is not a {WIREGUARD_KEY_LENGTH}-byte WireGuard key")
    return key


def new_run_nonce() -> str:
    """A fresh nonce for one run of the setup script: lowercase hex, from the OS's CSPRNG."""
    return secrets.token_hex(RUN_NONCE_BYTES)


def check_run_nonce(nonce: str) -> None:
    """SetupParamsError unless `nonce` has the form `new_run_nonce` gives."""
    if not _RUN_NONCE.fullmatch(nonce):
        raise SetupParamsError(f"run nonce {nonce[:80]!r} is not {2 * RUN_NONCE_BYTES} lowercase hex digits")


def teardown_arguments(params: TeardownParams, *, nonce: str) -> list[str]:
    """The script's arguments for a teardown after `sh -c SCRIPT NAME`."""
    check_run_nonce(nonce)
    arguments = [
        ScriptMode.TEARDOWN.value,
        "--nonce", nonce,
        "--interface", params.interface,
        "--iptables", params.iptables.value,
        "--host-address", str(params.host_address),
    ]  # fmt: skip
    if params.host_address6 is not None:
        arguments += ["--host-address6", str(params.host_address6)]
    return arguments


def script_arguments(params: SetupParams, mode: ScriptMode, *, nonce: str) -> list[str]:
    """The script's arguments after `sh -c SCRIPT NAME`: the mode, then one `--option value` pair per input."""
    arguments = teardown_arguments(params.teardown_params, nonce=nonce)
    arguments[0] = mode.value
    if mode is ScriptMode.TEARDOWN:
        return arguments
    arguments += [
        "--host-public-key", params.host_public_key_base64,
        "--port", str(params.port),
        "--vm-address", str(params.vm_address),
        "--mtu", str(params.mtu),
    ]  # fmt: skip
    if params.vm_address6 is not None:
        arguments += ["--vm-address6", str(params.vm_address6)]
    if params.endpoint is not None:
        arguments += ["--endpoint", params.endpoint]
    else:
        for candidate in params.endpoint_candidates:
            arguments += ["--endpoint-candidate", candidate]
    for inbound in params.allow_inbound:
        arguments += ["--allow-inbound", f"{inbound.port}/{inbound.protocol}"]
    for shim in params.shims:
        arguments += ["--shim", shim_argument(shim)]
    for host in params.direct_hosts:
        arguments += ["--direct-host", str(host)]
    return arguments


def script_command(params: SetupParams | TeardownParams, mode: ScriptMode, *, nonce: str) -> list[str]:
    """The container command running the embedded script in `mode`: `/bin/sh -c SCRIPT dmnc-setup ARGS...`, for
    the run identified by `nonce` (from `new_run_nonce`; its result line must carry it).

    TeardownParams carry only what a teardown needs; SETUP and USERSPACE need SetupParams (SetupParamsError).
    CHECK takes only the nonce: it touches neither the interface nor the rules the params describe."""
    if mode is ScriptMode.CHECK:
        check_run_nonce(nonce)
        arguments = [mode.value, "--nonce", nonce]
    elif isinstance(params, TeardownParams):
        if mode is not ScriptMode.TEARDOWN:
            raise SetupParamsError(f"{mode.value} needs the full SetupParams, not TeardownParams")
        arguments = teardown_arguments(params, nonce=nonce)
    else:
        arguments = script_arguments(params, mode, nonce=nonce)
    return ["/bin/sh", "-c", setup_script(), SCRIPT_NAME, *arguments]
