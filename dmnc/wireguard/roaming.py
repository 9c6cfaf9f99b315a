"""Where a peer's endpoint may roam to (WireGuard whitepaper section 2.1, "Endpoints & Roaming").

WireGuard replies to the source of the most recent authenticated packet from a peer, so the peer can move. A peer
configured with `roam_anywhere=False` may move only within limits: never into another address family, and never
from a loopback address to one that is not. dmnc's VM peer is such a peer: Docker Desktop's VM reaches the host on
loopback and Colima's from one vmnet/bridge address, so an authenticated packet arriving from anywhere else is not
a reason to send the VM's traffic off the machine or over another network stack; it is dropped and counted
(`DropReason.ROAMING_REFUSED`) instead. Pure: the caller passes both endpoints.
"""

from __future__ import annotations

import ipaddress

from dmnc.wireguard.outputs import Endpoint


def _family_and_loopback(host: str) -> tuple[int, bool] | None:
    """(IP version, is loopback) of an endpoint address; an IPv4-mapped IPv6 address (RFC 4291 section 2.5.5.2,
    what a dual-stack socket reports for IPv4 senders) counts as the IPv4 address it carries."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version, address.is_loopback


def restricted_roam_allowed(current: Endpoint | None, source: Endpoint) -> bool:
    """Whether a peer that may not roam anywhere may move from `current` to `source`: the first endpoint learned
    (current None) is always taken; after that only the same family, and off loopback only from non-loopback."""
    if current is None or current == source:
        return True
    old = _family_and_loopback(current[0])
    new = _family_and_loopback(source[0])
    if old is None or new is None:
        return False
    old_version, old_loopback = old
    new_version, new_loopback = new
    return new_version == old_version and (new_loopback or not old_loopback)
