"""rtnetlink requests that configure a TUN interface: link MTU and up, IPv6 address generation mode (RTM_NEWLINK),
addresses (RTM_NEWADDR).

Pure encoding; netlink framing and acknowledgements are `dmnc.netlink`'s and `linux.py` owns the socket. Payload
layouts and numbers come from the Linux UAPI headers `linux/rtnetlink.h` (ifinfomsg, ifaddrmsg, RTM_NEWADDR),
`linux/if_link.h` (IFLA_*), `linux/if_addr.h` (IFA_*, IFA_F_*) and `linux/if.h` (IFF_UP). Host byte order,
addresses in network byte order.
"""

from __future__ import annotations

import ipaddress

from dmnc import netlink
from dmnc.netlink import (
    AF_INET,
    AF_INET6,
    AF_UNSPEC,
    IFA_ADDRESS,
    IFA_LOCAL,
    IFADDRMSG,
    IFINFOMSG,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    RT_SCOPE_UNIVERSE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    Header,
    encode_attribute,
)

# linux/if_link.h, linux/if_addr.h, linux/if.h
IFLA_MTU = 4
IFA_F_NODAD = 0x02  # no duplicate address detection: a point-to-point tunnel has no one to collide with
IFF_UP = 0x1
# linux/if_link.h: IFLA_AF_SPEC nests one attribute per address family; inside AF_INET6, IFLA_INET6_ADDR_GEN_MODE
# (a u8) set to IN6_ADDR_GEN_MODE_NONE makes the kernel generate no link-local address when the link comes up.
IFLA_AF_SPEC = 26
IFLA_INET6_ADDR_GEN_MODE = 8
IN6_ADDR_GEN_MODE_NONE = 1
# linux/netlink.h: marks an attribute whose value is more attributes.
NLA_F_NESTED = 1 << 15

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def encode_link_settings(index: int, seq: int, *, mtu: int | None, up: bool) -> bytes:
    """RTM_NEWLINK on an existing link: set its MTU (if given) and bring it up (if `up`)."""
    change = IFF_UP if up else 0
    body = IFINFOMSG.pack(AF_UNSPEC, 0, index, IFF_UP if up else 0, change)
    if mtu is not None:
        body += encode_attribute(IFLA_MTU, netlink.U32.pack(mtu))
    return netlink.encode_message(Header(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, 0), body)


def encode_no_link_local(index: int, seq: int) -> bytes:
    """RTM_NEWLINK: IPv6 address generation mode "none" on link `index`. Sent before the link goes up, the link
    never gets a link-local address, so it sends no router solicitation or MLD report of its own and has no address
    a router advertisement or redirect would be addressed to."""
    mode = encode_attribute(IFLA_INET6_ADDR_GEN_MODE, bytes([IN6_ADDR_GEN_MODE_NONE]))
    af_spec = encode_attribute(IFLA_AF_SPEC | NLA_F_NESTED, encode_attribute(AF_INET6 | NLA_F_NESTED, mode))
    body = IFINFOMSG.pack(AF_UNSPEC, 0, index, 0, 0) + af_spec
    return netlink.encode_message(Header(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, 0), body)


def encode_add_address(index: int, seq: int, local: Interface, peer: Address | None = None) -> bytes:
    """RTM_NEWADDR: `local` on link `index`; with `peer`, a point-to-point address as `ip addr add L peer P`.

    For point-to-point addresses the kernel reads IFA_LOCAL as ours and IFA_ADDRESS as the far end, and the prefix
    length applies to the peer (iproute2 ipaddress.c does the same); without a peer both carry the local address.
    Adding an address that is already present succeeds (NLM_F_REPLACE), so a restart is idempotent.
    """
    if peer is not None and peer.version != local.version:
        raise ValueError(f"peer {peer} and local address {local} are of different IP versions")
    family = AF_INET if local.version == 4 else AF_INET6
    flags = IFA_F_NODAD if local.version == 6 else 0
    prefix_length = local.max_prefixlen if peer is not None else local.network.prefixlen
    body = IFADDRMSG.pack(family, prefix_length, flags, RT_SCOPE_UNIVERSE, index)
    body += encode_attribute(IFA_LOCAL, local.ip.packed)
    body += encode_attribute(IFA_ADDRESS, (peer if peer is not None else local.ip).packed)
    request_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    return netlink.encode_message(Header(RTM_NEWADDR, request_flags, seq, 0), body)
