"""The host's own traffic that container routes must never capture: its DNS servers, read from the resolver
configuration, and the addresses and connected subnets of its interfaces other than the tunnel.

Interface addresses: each address is a /32 (/128), and the subnet its prefix length makes is connected (the kernel
adds that route for it, RTPROT_KERNEL on Linux); on a point-to-point link the prefix belongs to the peer's address.
The platform readers (`dmnc.routes.linux`: an RTM_GETADDR dump; `dmnc.routes.darwin_host`: the NET_RT_IFLIST
sysctl) hand their addresses to `address_networks`.

DNS servers, Linux: /etc/resolv.conf (resolv.conf(5): `nameserver ADDRESS` lines, `#` or `;` comments) and, when
systemd-resolved runs, /run/systemd/resolve/resolv.conf, which lists the real upstream servers rather than its
127.0.0.53 stub (systemd-resolved.service(8)). The parser is pure; the reader caps what it reads, since a
resolver file is a few hundred bytes and anything larger is not one.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

from dmnc.routes.manager import Address
from dmnc.routes.policy import HostNetwork

RESOLV_CONF_PATHS = (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf"))
# glibc reads at most MAXNS (3) servers, but a file may list more for other resolvers; this is far above both.
MAX_RESOLV_CONF_BYTES = 64 * 1024
# Interface addresses are read again this often even without a change notification (one may have been lost, or
# the platform has none).
ADDRESS_REREAD_SECONDS = 30.0
# How often the DNS configuration is read again: it changes without any event dmnc follows (a new Wi-Fi).
DNS_REREAD_SECONDS = 30.0


def parse_resolv_conf(text: str) -> tuple[Address, ...]:
    """The `nameserver` addresses, in order, without duplicates; anything else (and bad addresses) is ignored,
    as the resolver ignores it. An IPv6 zone (`fe80::1%eth0`) is dropped: routes do not carry one."""
    servers: list[Address] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(words[1].split("%", 1)[0])
        except ValueError:
            continue
        if address not in servers:
            servers.append(address)
    return tuple(servers)


@runtime_checkable
class HostAddressSource(Protocol):
    """The host's interface addresses, and notice when they change (a route manager that can tell offers it)."""

    async def host_networks(self) -> tuple[HostNetwork, ...]:
        """The addresses and connected subnets of every interface but the tunnel; raises RouteError."""
        ...

    def address_changes(self) -> AbstractAsyncContextManager[AsyncIterator[None]]:
        """Subscribe to address changes: one item per change (or per batch of them); raises RouteError."""
        ...


def address_networks(interface: str, local: Address, address: Address, prefix_length: int) -> tuple[HostNetwork, ...]:
    """The host networks of one interface address: the address itself and, unless it is a host address, its
    connected subnet (`address` is the peer on a point-to-point link, else `local` again)."""
    own = HostNetwork(interface, ipaddress.ip_network(local))
    connected = HostNetwork(interface, ipaddress.ip_interface((address, prefix_length)).network)
    return (own,) if connected.network == own.network else (own, connected)


def host_networks_of(
    addresses: Iterable[tuple[str, Address, Address, int]], tunnel_interface: str
) -> tuple[HostNetwork, ...]:
    """Every host network of (interface, local, address, prefix length) entries, the tunnel's left out, without
    duplicates, in order."""
    networks: list[HostNetwork] = []
    for interface, local, address, prefix_length in addresses:
        if interface == tunnel_interface:
            continue
        networks.extend(n for n in address_networks(interface, local, address, prefix_length) if n not in networks)
    return tuple(networks)


def parse_scutil_dns(text: str) -> tuple[Address, ...]:
    """The DNS servers of every resolver `scutil --dns` (scutil(8)) lists, the scoped ones too: lines
    `  nameserver[N] : ADDRESS`, an IPv6 zone (`fe80::1%en0`) dropped. Anything else is ignored."""
    servers: list[Address] = []
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if not colon or not key.strip().startswith("nameserver["):
            continue
        try:
            address = ipaddress.ip_address(value.strip().split("%", 1)[0])
        except ValueError:
            continue
        if address not in servers:
            servers.append(address)
    return tuple(servers)


def _read_capped(path: Path) -> str | None:
    """The file's text, or None when it is missing, unreadable, not a regular file or too large."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        data = os.read(descriptor, MAX_RESOLV_CONF_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(descriptor)
    if len(data) > MAX_RESOLV_CONF_BYTES:
        return None
    return data.decode("utf-8", errors="replace")


def read_dns_servers(paths: Iterable[Path] = RESOLV_CONF_PATHS) -> tuple[Address, ...]:
    """Every DNS server the resolver files name, in order of the files."""
    servers: list[Address] = []
    for path in paths:
        text = _read_capped(path)
        if text is not None:
            servers.extend(server for server in parse_resolv_conf(text) if server not in servers)
    return tuple(servers)
