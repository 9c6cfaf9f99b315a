"""The host's own traffic that container routes must never capture: for now its DNS servers, read from the
resolver configuration. (Interface addresses and connected subnets are still to come: see the policy's HostState.)

Linux: /etc/resolv.conf (resolv.conf(5): `nameserver ADDRESS` lines, `#` or `;` comments) and, when
systemd-resolved runs, /run/systemd/resolve/resolv.conf, which lists the real upstream servers rather than its
127.0.0.53 stub (systemd-resolved.service(8)). The parser is pure; the reader caps what it reads, since a
resolver file is a few hundred bytes and anything larger is not one.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from dmnc.routes.manager import Address

RESOLV_CONF_PATHS = (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf"))
# glibc reads at most MAXNS (3) servers, but a file may list more for other resolvers; this is far above both.
MAX_RESOLV_CONF_BYTES = 64 * 1024
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
