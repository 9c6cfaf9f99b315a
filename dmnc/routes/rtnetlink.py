"""rtnetlink route messages (and the link notifications the route monitor reads), interface addresses and
policy rules: a pure encoder and decoder.

Netlink framing (headers, attributes, acknowledgements, malformed input) is `dmnc.netlink`'s; this module adds the
payloads, laid out as in the Linux UAPI headers `linux/rtnetlink.h` (rtmsg, RTM_*, RTA_*, RTN_*, RTPROT_*,
RT_SCOPE_*, RT_TABLE_*, RTNLGRP_*), `linux/if_addr.h` (ifaddrmsg, IFA_*) and `linux/fib_rules.h` (fib_rule_hdr,
FRA_*, FR_ACT_*). Host byte order, except IP addresses, which are network byte order as the
kernel stores them.

Bytes from the kernel are untrusted: `decode_messages_untrusted` never raises (see `dmnc.netlink`).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass

from dmnc import netlink
from dmnc.netlink import (
    AF_INET,
    AF_INET6,
    AF_UNSPEC,
    IFA_ADDRESS,
    IFA_LOCAL,
    IFADDRMSG,
    IFINFOMSG,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    RT_SCOPE_UNIVERSE,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_NEWADDR,
    RTM_NEWLINK,
    ControlMessage,
    Header,
    MalformedMessageError,
    encode_attribute,
    u32_untrusted,
)

Destination = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# linux/rtnetlink.h
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_TABLE = 15
RTN_UNICAST = 1
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
RT_TABLE_UNSPEC = 0
RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255
RTPROT_STATIC = 4  # protocols >= RTPROT_STATIC are not interpreted by the kernel, only stored and reported
RTNLGRP_LINK = 1
RTNLGRP_IPV4_IFADDR = 5
RTNLGRP_IPV4_ROUTE = 7
RTNLGRP_IPV4_RULE = 8
RTNLGRP_IPV6_IFADDR = 9
RTNLGRP_IPV6_ROUTE = 11
RTNLGRP_IPV6_RULE = 19
# rtm_flags of a route lookup: report the table the answer came from (else it says "main" whatever rule matched),
# and the FIB entry that matched (its prefix) rather than a host route made for the address.
RTM_F_LOOKUP_TABLE = 0x1000
RTM_F_FIB_MATCH = 0x2000

# linux/rtnetlink.h and linux/fib_rules.h: policy routing rules
RTM_NEWRULE = 32
RTM_DELRULE = 33
RTM_GETRULE = 34
FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, res1, res2, action, flags
FRA_PRIORITY = 6
FRA_TABLE = 15
FR_ACT_TO_TBL = 1

# The marker that makes a route dmnc's own. 220 is listed neither in linux/rtnetlink.h nor in iproute2's
# rt_protos, and being >= RTPROT_STATIC the kernel only stores it. Deletes carry it too, and the kernel matches it
# on delete (fib_table_delete, ip6_route_del), so dmnc cannot remove a route it did not add even by mistake.
RTPROT_DMNC = 220

_ADDRESS_LENGTH: dict[int, int] = {AF_INET: 4, AF_INET6: 16}
_MAX_PREFIX: dict[int, int] = {AF_INET: 32, AF_INET6: 128}


class RouteMessageKind(enum.IntEnum):
    NEW = RTM_NEWROUTE
    DELETE = RTM_DELROUTE
    GET = RTM_GETROUTE


@dataclass(frozen=True, slots=True)
class RouteMessage:
    """One RTM_*ROUTE message with the attributes dmnc reads or writes; others are skipped on decode."""

    kind: RouteMessageKind
    family: int
    destination: Destination | None  # None in a dump request (rtm_dst_len 0 and no RTA_DST)
    flags: int = NLM_F_REQUEST
    seq: int = 0
    port_id: int = 0  # nlmsg_pid: the sender's netlink port; in a notification, the port that caused it
    table: int = RT_TABLE_MAIN
    protocol: int = 0
    scope: int = RT_SCOPE_UNIVERSE
    route_type: int = RTN_UNICAST
    route_flags: int = 0
    output_interface: int | None = None
    gateway: Address | None = None
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class LinkMessage:
    """RTM_NEWLINK/RTM_DELLINK: an interface appeared, changed (up, down, renamed) or went away."""

    deleted: bool
    interface_index: int
    interface_flags: int  # IFF_* of linux/if.h
    seq: int = 0
    port_id: int = 0


@dataclass(frozen=True, slots=True)
class AddressMessage:
    """RTM_NEWADDR/RTM_DELADDR: an address of an interface. `local` is this end; `address` is the same address,
    or the peer on a point-to-point link, and `prefix_length` applies to it (iproute2 ipaddress.c reads them so)."""

    deleted: bool
    family: int
    prefix_length: int
    interface_index: int
    address: Address
    local: Address
    seq: int = 0
    port_id: int = 0


@dataclass(frozen=True, slots=True)
class RuleMessage:
    """RTM_NEWRULE/RTM_DELRULE (a rule dump's entries, rule notifications): a policy routing rule's priority and the
    table it looks up."""

    family: int
    priority: int  # FRA_PRIORITY; 0 when absent (the rule `ip rule` shows first, priority 0)
    table: int  # FRA_TABLE when present (tables above 255), else the header's byte
    action: int
    seq: int = 0
    port_id: int = 0


# What one datagram on a route socket holds, once decoded.
NetlinkMessage = RouteMessage | LinkMessage | AddressMessage | RuleMessage | ControlMessage


def encode_route_message(message: RouteMessage) -> bytes:
    """The wire form of `message`; the kernel and `decode_messages_untrusted` read it back field for field."""
    destination = message.destination
    if destination is not None and _family_of(destination) != message.family:
        raise ValueError(f"destination {destination} does not match address family {message.family}")
    table_byte = message.table if message.table < 256 else RT_TABLE_UNSPEC
    body = RTMSG.pack(
        message.family,
        destination.prefixlen if destination is not None else 0,
        0,
        0,
        table_byte,
        message.protocol,
        message.scope,
        message.route_type,
        message.route_flags,
    )
    attributes = [encode_attribute(RTA_TABLE, netlink.U32.pack(message.table))]
    if destination is not None:
        attributes.append(encode_attribute(RTA_DST, destination.network_address.packed))
    if message.output_interface is not None:
        attributes.append(encode_attribute(RTA_OIF, netlink.U32.pack(message.output_interface)))
    if message.gateway is not None:
        attributes.append(encode_attribute(RTA_GATEWAY, message.gateway.packed))
    if message.priority is not None:
        attributes.append(encode_attribute(RTA_PRIORITY, netlink.U32.pack(message.priority)))
    header = Header(message.kind, message.flags, message.seq, message.port_id)
    return netlink.encode_message(header, body + b"".join(attributes))


def encode_link_message(message: LinkMessage) -> bytes:
    """An RTM_NEWLINK/DELLINK notification as the kernel sends it, without attributes."""
    body = IFINFOMSG.pack(AF_UNSPEC, 0, message.interface_index, message.interface_flags, 0)
    message_type = RTM_DELLINK if message.deleted else RTM_NEWLINK
    return netlink.encode_message(Header(message_type, 0, message.seq, message.port_id), body)


def encode_dump_request(seq: int, family: int = AF_UNSPEC) -> bytes:
    """RTM_GETROUTE with NLM_F_DUMP: every route of `family` (AF_UNSPEC: all), as a multipart reply."""
    body = RTMSG.pack(family, 0, 0, 0, RT_TABLE_UNSPEC, 0, 0, 0, 0)
    return netlink.encode_message(Header(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0), body)


def encode_lookup_request(address: Address, seq: int) -> bytes:
    """RTM_GETROUTE for one address, as `ip route get ADDRESS fibmatch` asks: the kernel answers with the route it
    would use after evaluating every policy rule, and the table that route is in."""
    family = AF_INET if address.version == 4 else AF_INET6
    flags = RTM_F_LOOKUP_TABLE | RTM_F_FIB_MATCH
    body = RTMSG.pack(family, address.max_prefixlen, 0, 0, RT_TABLE_UNSPEC, 0, 0, 0, flags)
    body += encode_attribute(RTA_DST, address.packed)
    return netlink.encode_message(Header(RTM_GETROUTE, NLM_F_REQUEST, seq, 0), body)


def encode_address_dump_request(seq: int) -> bytes:
    """RTM_GETADDR with NLM_F_DUMP: every address of every interface, both families."""
    body = IFADDRMSG.pack(AF_UNSPEC, 0, 0, 0, 0)
    return netlink.encode_message(Header(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0), body)


def encode_rule_dump_request(seq: int, family: int) -> bytes:
    """RTM_GETRULE with NLM_F_DUMP: the policy routing rules of `family` (AF_INET or AF_INET6)."""
    body = FIB_RULE_HDR.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    return netlink.encode_message(Header(RTM_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0), body)


def encode_address_message(message: AddressMessage) -> bytes:
    """An RTM_NEWADDR/DELADDR as the kernel sends it in a dump or notification."""
    body = IFADDRMSG.pack(message.family, message.prefix_length, 0, RT_SCOPE_UNIVERSE, message.interface_index)
    body += encode_attribute(IFA_ADDRESS, message.address.packed)
    if message.local != message.address:
        body += encode_attribute(IFA_LOCAL, message.local.packed)
    message_type = RTM_DELADDR if message.deleted else RTM_NEWADDR
    return netlink.encode_message(Header(message_type, 0, message.seq, message.port_id), body)


def encode_rule_message(message: RuleMessage) -> bytes:
    """An RTM_NEWRULE as the kernel sends it in a rule dump."""
    table_byte = message.table if message.table < 256 else RT_TABLE_UNSPEC
    body = FIB_RULE_HDR.pack(message.family, 0, 0, 0, table_byte, 0, 0, message.action, 0)
    body += encode_attribute(FRA_TABLE, netlink.U32.pack(message.table))
    body += encode_attribute(FRA_PRIORITY, netlink.U32.pack(message.priority))
    return netlink.encode_message(Header(RTM_NEWRULE, netlink.NLM_F_MULTI, message.seq, message.port_id), body)


def _family_of(destination: Destination) -> int:
    return AF_INET if destination.version == 4 else AF_INET6


def _address_untrusted(family: int, value: bytes) -> Address:
    if len(value) != _ADDRESS_LENGTH[family]:
        raise MalformedMessageError(f"address of {len(value)} bytes for family {family}")
    if family == AF_INET:
        return ipaddress.IPv4Address(value)
    return ipaddress.IPv6Address(value)


def _route_untrusted(header: Header, payload: bytes) -> RouteMessage:
    if len(payload) < RTMSG.size:
        raise MalformedMessageError(f"route message payload of {len(payload)} bytes, rtmsg needs {RTMSG.size}")
    family, dst_len, _src_len, _tos, table, protocol, scope, route_type, route_flags = RTMSG.unpack_from(payload)
    attributes = netlink.attributes_untrusted(payload[RTMSG.size :])
    if family not in _ADDRESS_LENGTH:
        raise MalformedMessageError(f"route of address family {family}")
    if dst_len > _MAX_PREFIX[family]:
        raise MalformedMessageError(f"prefix length {dst_len} for family {family}")
    destination: Destination | None
    if RTA_DST in attributes:
        address = _address_untrusted(family, attributes[RTA_DST])
        try:
            destination = ipaddress.ip_network((address, dst_len))
        except ValueError as error:
            raise MalformedMessageError(f"destination {address}/{dst_len} has host bits set") from error
    elif dst_len == 0:
        # The kernel omits RTA_DST for a default route; a dump request has none either.
        destination = ipaddress.ip_network((0, 0)) if family == AF_INET else ipaddress.ip_network(("::", 0))
        if header.message_type == RTM_GETROUTE:
            destination = None
    else:
        raise MalformedMessageError(f"prefix length {dst_len} without a destination attribute")
    if RTA_TABLE in attributes:
        table = u32_untrusted(attributes[RTA_TABLE], "RTA_TABLE")
    return RouteMessage(
        kind=RouteMessageKind(header.message_type),
        family=family,
        destination=destination,
        flags=header.flags,
        seq=header.seq,
        port_id=header.port_id,
        table=table,
        protocol=protocol,
        scope=scope,
        route_type=route_type,
        route_flags=route_flags,
        output_interface=u32_untrusted(attributes[RTA_OIF], "RTA_OIF") if RTA_OIF in attributes else None,
        gateway=_address_untrusted(family, attributes[RTA_GATEWAY]) if RTA_GATEWAY in attributes else None,
        priority=u32_untrusted(attributes[RTA_PRIORITY], "RTA_PRIORITY") if RTA_PRIORITY in attributes else None,
    )


def _link_untrusted(header: Header, payload: bytes) -> LinkMessage:
    if len(payload) < IFINFOMSG.size:
        raise MalformedMessageError(f"link message payload of {len(payload)} bytes, ifinfomsg needs {IFINFOMSG.size}")
    _family, _type, index, interface_flags, _change = IFINFOMSG.unpack_from(payload)
    return LinkMessage(header.message_type == RTM_DELLINK, index, interface_flags, header.seq, header.port_id)


def _address_message_untrusted(header: Header, payload: bytes) -> AddressMessage:
    if len(payload) < IFADDRMSG.size:
        raise MalformedMessageError(f"address payload of {len(payload)} bytes, ifaddrmsg needs {IFADDRMSG.size}")
    family, prefix_length, _flags, _scope, index = IFADDRMSG.unpack_from(payload)
    if family not in _ADDRESS_LENGTH:
        raise MalformedMessageError(f"address of family {family}")
    if prefix_length > _MAX_PREFIX[family]:
        raise MalformedMessageError(f"address prefix length {prefix_length} for family {family}")
    attributes = netlink.attributes_untrusted(payload[IFADDRMSG.size :])
    present = [attributes[kind] for kind in (IFA_ADDRESS, IFA_LOCAL) if kind in attributes]
    if not present:
        raise MalformedMessageError("address message without IFA_ADDRESS or IFA_LOCAL")
    address = _address_untrusted(family, present[0])
    local = _address_untrusted(family, present[-1])
    return AddressMessage(
        header.message_type == RTM_DELADDR, family, prefix_length, index, address, local, header.seq, header.port_id
    )


def _rule_untrusted(header: Header, payload: bytes) -> RuleMessage:
    if len(payload) < FIB_RULE_HDR.size:
        raise MalformedMessageError(f"rule payload of {len(payload)} bytes, fib_rule_hdr needs {FIB_RULE_HDR.size}")
    family, _dst, _src, _tos, table, _res1, _res2, action, _flags = FIB_RULE_HDR.unpack_from(payload)
    attributes = netlink.attributes_untrusted(payload[FIB_RULE_HDR.size :])
    if FRA_TABLE in attributes:
        table = u32_untrusted(attributes[FRA_TABLE], "FRA_TABLE")
    priority = u32_untrusted(attributes[FRA_PRIORITY], "FRA_PRIORITY") if FRA_PRIORITY in attributes else 0
    return RuleMessage(family, priority, table, action, header.seq, header.port_id)


# Everything a route socket is sent: replies to route requests and dumps (routes, addresses, rules), route, link
# and address notifications.
_DECODERS: netlink.PayloadDecoders[RouteMessage | LinkMessage | AddressMessage | RuleMessage] = {
    RTM_NEWROUTE: _route_untrusted,
    RTM_DELROUTE: _route_untrusted,
    RTM_GETROUTE: _route_untrusted,
    RTM_NEWLINK: _link_untrusted,
    RTM_DELLINK: _link_untrusted,
    RTM_NEWADDR: _address_message_untrusted,
    RTM_DELADDR: _address_message_untrusted,
    RTM_NEWRULE: _rule_untrusted,
    RTM_DELRULE: _rule_untrusted,
}


def decode_messages_untrusted(data: bytes, drops: Counter[str] | None = None) -> list[NetlinkMessage]:
    """Every message in one datagram from the kernel; malformed ones are logged, counted and dropped."""
    return netlink.decode_messages_untrusted(data, _DECODERS, drops)
