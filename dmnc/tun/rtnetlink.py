"""rtnetlink requests that configure a TUN interface: link MTU and up (RTM_NEWLINK), addresses (RTM_NEWADDR).

Pure encoding plus an acknowledgement parser; `linux.py` owns the socket. Layouts and numbers come from the Linux
UAPI headers `linux/netlink.h` (nlmsghdr, nlmsgerr, NLM_F_*), `linux/rtnetlink.h` (ifinfomsg, ifaddrmsg, rtattr,
RTM_*), `linux/if_link.h` (IFLA_*), `linux/if_addr.h` (IFA_*, IFA_F_*) and `linux/if.h` (IFF_UP). Host byte order,
addresses in network byte order.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

# linux/netlink.h
NLMSGHDR = struct.Struct("=IHHII")  # nlmsg_len, nlmsg_type, nlmsg_flags, nlmsg_seq, nlmsg_pid
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x01
NLM_F_ACK = 0x04
NLM_F_REPLACE = 0x100
NLM_F_CREATE = 0x400
NLMSGERR_ERROR = struct.Struct("=i")  # struct nlmsgerr begins with `int error`: -errno, 0 = acknowledgement

# linux/rtnetlink.h
RTM_NEWLINK = 16
RTM_NEWADDR = 20
IFINFOMSG = struct.Struct("=BxHiII")  # ifi_family, pad, ifi_type, ifi_index, ifi_flags, ifi_change
IFADDRMSG = struct.Struct("=BBBBI")  # ifa_family, ifa_prefixlen, ifa_flags, ifa_scope, ifa_index
RTATTR = struct.Struct("=HH")  # rta_len, rta_type
RT_SCOPE_UNIVERSE = 0

# linux/if_link.h, linux/if_addr.h, linux/if.h
IFLA_MTU = 4
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_F_NODAD = 0x02  # no duplicate address detection: a point-to-point tunnel has no one to collide with
IFF_UP = 0x1

_ALIGNMENT = 4  # NLMSG_ALIGNTO and RTA_ALIGNTO
_U32 = struct.Struct("=I")

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetlinkError(Exception):
    """The kernel refused a request (errno set), or its reply was not an acknowledgement of it."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


def _padding(length: int) -> bytes:
    return b"\0" * (-length % _ALIGNMENT)


def _attribute(attribute_type: int, value: bytes) -> bytes:
    length = RTATTR.size + len(value)
    return RTATTR.pack(length, attribute_type) + value + _padding(length)


def _request(message_type: int, flags: int, seq: int, payload: bytes) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(payload), message_type, flags, seq, 0) + payload


def encode_link_settings(index: int, seq: int, *, mtu: int | None, up: bool) -> bytes:
    """RTM_NEWLINK on an existing link: set its MTU (if given) and bring it up (if `up`)."""
    change = IFF_UP if up else 0
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, change)
    if mtu is not None:
        body += _attribute(IFLA_MTU, _U32.pack(mtu))
    return _request(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def encode_add_address(index: int, seq: int, local: Interface, peer: Address | None = None) -> bytes:
    """RTM_NEWADDR: `local` on link `index`; with `peer`, a point-to-point address as `ip addr add L peer P`.

    For point-to-point addresses the kernel reads IFA_LOCAL as ours and IFA_ADDRESS as the far end, and the prefix
    length applies to the peer (iproute2 ipaddress.c does the same); without a peer both carry the local address.
    Adding an address that is already present succeeds (NLM_F_REPLACE), so a restart is idempotent.
    """
    if peer is not None and peer.version != local.version:
        raise ValueError(f"peer {peer} and local address {local} are of different IP versions")
    family = socket.AF_INET if local.version == 4 else socket.AF_INET6
    flags = IFA_F_NODAD if local.version == 6 else 0
    prefix_length = local.max_prefixlen if peer is not None else local.network.prefixlen
    body = IFADDRMSG.pack(family, prefix_length, flags, RT_SCOPE_UNIVERSE, index)
    body += _attribute(IFA_LOCAL, local.ip.packed)
    body += _attribute(IFA_ADDRESS, (peer if peer is not None else local.ip).packed)
    return _request(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq, body)


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """The kernel's NLMSG_ERROR answer to request `seq`: errno 0 means done."""

    seq: int
    errno: int


def parse_acknowledgements_untrusted(data: bytes) -> list[Acknowledgement]:
    """Every NLMSG_ERROR in one datagram read from the kernel; other messages are skipped.

    Raises only NetlinkError, for bytes that do not follow the netlink layout.
    """
    acknowledgements = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < NLMSGHDR.size:
            raise NetlinkError(f"netlink reply: {len(data) - offset} trailing bytes, shorter than a header")
        length, message_type, _flags, seq, _port = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            raise NetlinkError(f"netlink reply: message claims {length} bytes, {len(data) - offset} remain")
        if message_type == NLMSG_ERROR:
            if length < NLMSGHDR.size + NLMSGERR_ERROR.size:
                raise NetlinkError(f"netlink reply: error message of {length} bytes")
            (error,) = NLMSGERR_ERROR.unpack_from(data, offset + NLMSGHDR.size)
            if error > 0:
                raise NetlinkError(f"netlink reply: positive errno {error}")
            acknowledgements.append(Acknowledgement(seq, -error))
        offset += length + (-length % _ALIGNMENT)
    return acknowledgements
