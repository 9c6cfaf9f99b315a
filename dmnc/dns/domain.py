"""The domain dmnc answers for: parsed, refused when it would capture names the system needs, warned about when it
may shadow real names."""

from __future__ import annotations

import dns.exception
import dns.name

DEFAULT_DOMAIN = "dmnc.internal"

# Names whose resolution other mechanisms own: `local` is multicast DNS (RFC 6762 section 3), `localhost` must resolve
# to loopback (RFC 6761 section 6.3), `arpa` holds the reverse and infrastructure zones (RFC 3172). Answering for them
# (or anything under them) would break the host.
REFUSED_DOMAINS = ("local", "localhost", "arpa")
# Names that will never be delegated in the public DNS: `internal` (ICANN board resolution 2024.07.29.06 reserves it
# for private use), `test` (RFC 6761 section 6.2) and `home.arpa` (RFC 8375). Any other domain may exist publicly,
# and the host would stop reaching it while dmnc runs.
PRIVATE_USE_DOMAINS = ("internal", "test", "home.arpa")
# The one name under .arpa made for exactly this use (RFC 8375 section 3), so not refused with the rest of .arpa.
HOME_ARPA = dns.name.from_text("home.arpa")


class DomainError(ValueError):
    """The configured domain cannot be used; the message says why."""


def parse_domain(text: str) -> dns.name.Name:
    """An absolute name for `text` (a trailing dot is optional), lower-cased; DomainError when unusable."""
    stripped = text.strip().rstrip(".")
    if not stripped:
        raise DomainError("the DNS domain is empty")
    try:
        name = dns.name.from_text(stripped.lower())
    except (dns.exception.DNSException, UnicodeError, ValueError) as error:
        raise DomainError(f"{text!r} is not a DNS name: {error}") from error
    for refused in REFUSED_DOMAINS:
        if name.is_subdomain(dns.name.from_text(refused)) and not name.is_subdomain(HOME_ARPA):
            raise DomainError(f"{text!r} is under .{refused}, which other resolvers own; choose a name under .internal")
    # Room for `<container>.<network>.` below it: two labels of up to 63 octets each (RFC 1035 section 2.3.4).
    if sum(len(label) + 1 for label in name.labels) > 255 - 2 * 64:
        raise DomainError(f"{text!r} is too long to leave room for container names below it")
    return name


def domain_warning(name: dns.name.Name) -> str | None:
    """A warning when `name` is not under a private-use domain, None otherwise."""
    if any(name.is_subdomain(dns.name.from_text(private)) for private in PRIVATE_USE_DOMAINS):
        return None
    shown = name.to_text(omit_final_dot=True)
    return (
        f"DNS domain {shown} is not under .internal, .test or .home.arpa: while dmnc runs, the host asks dmnc for"
        f" every name under {shown}, including any that exist in the public DNS"
    )
