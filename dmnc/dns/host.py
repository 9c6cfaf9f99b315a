"""Which `HostResolver` this platform uses: /etc/resolver on macOS, systemd-resolved on Linux."""

from __future__ import annotations

import sys

from dmnc.dns.service import HostResolver


def open_host_resolver(interface: str) -> HostResolver | None:
    """The host resolver integration for the TUN `interface`; None where dmnc knows none (the log says what to do)."""
    system = sys.platform  # compared at run time: mypy would check only the branch of the platform it runs on
    if system == "darwin":
        from dmnc.dns.resolver_files import ResolverFile  # noqa: PLC0415 (macOS only)

        return ResolverFile()
    if system == "linux":
        from dmnc.dns.resolved import ResolvedLink  # noqa: PLC0415 (jeepney is needed on Linux only)

        return ResolvedLink(interface)
    return None
