"""What to tell a user whose resolver dmnc cannot configure (log line and doctor)."""

from __future__ import annotations

from collections.abc import Sequence

from dmnc.dns.server import DNS_PORT


def resolver_hint(domain: str, addresses: Sequence[str], port: int) -> str:
    """How to point a resolver at dmnc by hand, for the log and doctor when systemd-resolved cannot be used."""
    server = addresses[0] if port == DNS_PORT else f"{addresses[0]}#{port}"
    return (
        f"to resolve *.{domain}, forward that domain to {addresses[0]} port {port}: with dnsmasq"
        f" `server=/{domain}/{server}`, with unbound a stub-zone for {domain}, or query it directly:"
        f" dig @{addresses[0]} -p {port} NAME.{domain}"
    )
