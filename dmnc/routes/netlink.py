"""rtnetlink route messages: a pure encoder and decoder, no sockets.

Layouts and numbers come from the Linux UAPI headers: `linux/netlink.h` (nlmsghdr, NLMSG_*, NLM_F_*) and
`linux/rtnetlink.h` (rtmsg, rtattr, RTM_*, RTA_*, RTN_*, RTPROT_*, RT_SCOPE_*, RT_TABLE_*, RTNLGRP_*). Everything
is host byte order except IP addresses, which are network byte order as the kernel stores them.

Bytes from the kernel are untrusted: `decode_messages_untrusted` never raises. A malformed message is dropped with
one log line, and decoding stops at a malformed header because the next message's offset is unknown after it.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import struct
from collections import Counter
from dataclasses import dataclass

logger = logging.getLogger(__name__)

Destination = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# linux/socket.h: Linux's numbering, spelled out so this pure module means the same on any host (Darwin's
# AF_INET6 is 30, and these bytes are decoded in tests everywhere).
AF_UNSPEC = 0
AF_INET = 2
AF_INET6 = 10

# linux/netlink.h
NETLINK_ROUTE = 0
NLMSG_ALIGNTO = 4
NLMSGHDR = struct.Struct("=IHHII")  # nlmsg_len, nlmsg_type, nlmsg_flags, nlmsg_seq, nlmsg_pid
NLMSG_NOOP = 0x1
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
NLMSG_OVERRUN = 0x4
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100  # modifiers to GET requests
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100  # modifiers to NEW requests
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSGERR = struct.Struct("=i")  # struct nlmsgerr starts with `int error` (negative errno, 0 = ACK)
SOL_NETLINK = 270  # linux/socket.h
NETLINK_CAP_ACK = 10  # setsockopt: ACKs do not echo the request payload

# linux/rtnetlink.h
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFINFOMSG = struct.Struct("=BxHiII")  # ifi_family, pad, ifi_type, ifi_index, ifi_flags, ifi_change
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTATTR = struct.Struct("=HH")  # rta_len, rta_type
RTA_ALIGNTO = 4
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_TABLE = 15
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_TABLE_UNSPEC = 0
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4  # protocols >= RTPROT_STATIC are not interpreted by the kernel, only stored and reported
RTNLGRP_LINK = 1
RTNLGRP_IPV4_ROUTE = 7
RTNLGRP_IPV6_ROUTE = 11

# The marker that makes a route dmnc's own. 220 is listed neither in linux/rtnetlink.h nor in iproute2's
# rt_protos, and being >= RTPROT_STATIC the kernel only stores it. Deletes carry it too, and the kernel matches it
# on delete (fib_table_delete, ip6_route_del), so dmnc cannot remove a route it did not add even by mistake.
RTPROT_DMNC = 220

_ADDRESS_LENGTH: dict[int, int] = {AF_INET: 4, AF_INET6: 16}
_MAX_PREFIX: dict[int, int] = {AF_INET: 32, AF_INET6: 128}
_U32 = struct.Struct("=I")


def group_mask(*groups: int) -> int:
    """The legacy `nl_groups` bind mask for RTNLGRP_* numbers (bit group-1, as RTMGRP_* in rtnetlink.h)."""
    mask = 0
    for group in groups:
        mask |= 1 << (group - 1)
    return mask


def _align(length: int, alignment: int = NLMSG_ALIGNTO) -> int:
    return (length + alignment - 1) & ~(alignment - 1)


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
class ErrorMessage:
    """NLMSG_ERROR: `error` is a negative errno, or 0 for an acknowledgement."""

    seq: int
    port_id: int
    error: int


@dataclass(frozen=True, slots=True)
class DoneMessage:
    """NLMSG_DONE: the end of a multipart dump."""

    seq: int
    port_id: int
    flags: int = NLM_F_MULTI


@dataclass(frozen=True, slots=True)
class OverrunMessage:
    """NLMSG_OVERRUN: the kernel lost messages for this socket; state must be re-read."""

    seq: int
    port_id: int


@dataclass(frozen=True, slots=True)
class LinkMessage:
    """RTM_NEWLINK/RTM_DELLINK: an interface appeared, changed (up, down, renamed) or went away."""

    deleted: bool
    interface_index: int
    interface_flags: int  # IFF_* of linux/if.h
    seq: int = 0
    port_id: int = 0


NetlinkMessage = RouteMessage | ErrorMessage | DoneMessage | OverrunMessage | LinkMessage


class MalformedMessageError(Exception):
    """A message from the kernel does not follow the layout; only raised inside this module."""


def _attribute(attribute_type: int, value: bytes) -> bytes:
    length = RTATTR.size + len(value)
    return RTATTR.pack(length, attribute_type) + value + b"\0" * (_align(length, RTA_ALIGNTO) - length)


def _header(message_type: int, flags: int, seq: int, port_id: int, payload: bytes) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(payload), message_type, flags, seq, port_id) + payload


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
    attributes = [_attribute(RTA_TABLE, _U32.pack(message.table))]
    if destination is not None:
        attributes.append(_attribute(RTA_DST, destination.network_address.packed))
    if message.output_interface is not None:
        attributes.append(_attribute(RTA_OIF, _U32.pack(message.output_interface)))
    if message.gateway is not None:
        attributes.append(_attribute(RTA_GATEWAY, message.gateway.packed))
    if message.priority is not None:
        attributes.append(_attribute(RTA_PRIORITY, _U32.pack(message.priority)))
    return _header(message.kind, message.flags, message.seq, message.port_id, body + b"".join(attributes))


def encode_error_message(message: ErrorMessage) -> bytes:
    """An NLMSG_ERROR as the kernel sends it with NETLINK_CAP_ACK (the request's header echoed, no payload)."""
    echoed_request = NLMSGHDR.pack(NLMSGHDR.size, 0, 0, message.seq, message.port_id)
    return _header(NLMSG_ERROR, 0, message.seq, message.port_id, NLMSGERR.pack(message.error) + echoed_request)


def encode_done_message(message: DoneMessage) -> bytes:
    return _header(NLMSG_DONE, message.flags, message.seq, message.port_id, NLMSGERR.pack(0))


def encode_link_message(message: LinkMessage) -> bytes:
    """An RTM_NEWLINK/DELLINK notification as the kernel sends it, without attributes."""
    body = IFINFOMSG.pack(AF_UNSPEC, 0, message.interface_index, message.interface_flags, 0)
    message_type = RTM_DELLINK if message.deleted else RTM_NEWLINK
    return _header(message_type, 0, message.seq, message.port_id, body)


def encode_dump_request(seq: int, family: int = AF_UNSPEC) -> bytes:
    """RTM_GETROUTE with NLM_F_DUMP: every route of `family` (AF_UNSPEC: all), as a multipart reply."""
    body = RTMSG.pack(family, 0, 0, 0, RT_TABLE_UNSPEC, 0, 0, 0, 0)
    return _header(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0, body)


def _family_of(destination: Destination) -> int:
    return AF_INET if destination.version == 4 else AF_INET6


def _address_untrusted(family: int, value: bytes) -> Address:
    if len(value) != _ADDRESS_LENGTH[family]:
        raise MalformedMessageError(f"address of {len(value)} bytes for family {family}")
    if family == AF_INET:
        return ipaddress.IPv4Address(value)
    return ipaddress.IPv6Address(value)


def _u32_untrusted(value: bytes, name: str) -> int:
    if len(value) != _U32.size:
        raise MalformedMessageError(f"{name} of {len(value)} bytes")
    number: int = _U32.unpack(value)[0]
    return number


def _attributes_untrusted(data: bytes) -> dict[int, bytes]:
    attributes: dict[int, bytes] = {}
    offset = 0
    while offset + RTATTR.size <= len(data):
        length, attribute_type = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size or offset + length > len(data):
            raise MalformedMessageError(f"attribute {attribute_type} claims {length} bytes at offset {offset}")
        attributes[attribute_type] = data[offset + RTATTR.size : offset + length]
        offset += _align(length, RTA_ALIGNTO)
    return attributes


def _route_untrusted(message_type: int, flags: int, seq: int, port_id: int, payload: bytes) -> RouteMessage:
    if len(payload) < RTMSG.size:
        raise MalformedMessageError(f"route message payload of {len(payload)} bytes, rtmsg needs {RTMSG.size}")
    family, dst_len, _src_len, _tos, table, protocol, scope, route_type, route_flags = RTMSG.unpack_from(payload)
    attributes = _attributes_untrusted(payload[RTMSG.size :])
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
        if message_type == RTM_GETROUTE:
            destination = None
    else:
        raise MalformedMessageError(f"prefix length {dst_len} without a destination attribute")
    if RTA_TABLE in attributes:
        table = _u32_untrusted(attributes[RTA_TABLE], "RTA_TABLE")
    return RouteMessage(
        kind=RouteMessageKind(message_type),
        family=family,
        destination=destination,
        flags=flags,
        seq=seq,
        port_id=port_id,
        table=table,
        protocol=protocol,
        scope=scope,
        route_type=route_type,
        route_flags=route_flags,
        output_interface=_u32_untrusted(attributes[RTA_OIF], "RTA_OIF") if RTA_OIF in attributes else None,
        gateway=_address_untrusted(family, attributes[RTA_GATEWAY]) if RTA_GATEWAY in attributes else None,
        priority=_u32_untrusted(attributes[RTA_PRIORITY], "RTA_PRIORITY") if RTA_PRIORITY in attributes else None,
    )


def _message_untrusted(message_type: int, flags: int, seq: int, port_id: int, payload: bytes) -> NetlinkMessage | None:
    if message_type in (RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE):
        return _route_untrusted(message_type, flags, seq, port_id, payload)
    if message_type in (RTM_NEWLINK, RTM_DELLINK):
        if len(payload) < IFINFOMSG.size:
            raise MalformedMessageError(
                f"link message payload of {len(payload)} bytes, ifinfomsg needs {IFINFOMSG.size}"
            )
        _family, _type, index, interface_flags, _change = IFINFOMSG.unpack_from(payload)
        return LinkMessage(message_type == RTM_DELLINK, index, interface_flags, seq, port_id)
    if message_type == NLMSG_ERROR:
        if len(payload) < NLMSGERR.size:
            raise MalformedMessageError(f"error message payload of {len(payload)} bytes")
        error: int = NLMSGERR.unpack_from(payload)[0]
        if error > 0:
            raise MalformedMessageError(f"error message with positive errno {error}")
        return ErrorMessage(seq=seq, port_id=port_id, error=error)
    if message_type == NLMSG_DONE:
        return DoneMessage(seq=seq, port_id=port_id, flags=flags)
    if message_type == NLMSG_OVERRUN:
        return OverrunMessage(seq=seq, port_id=port_id)
    return None  # NLMSG_NOOP and families dmnc never asked for carry nothing it needs


def decode_messages_untrusted(data: bytes, drops: Counter[str] | None = None) -> list[NetlinkMessage]:
    """Every netlink message in one datagram from the kernel; malformed ones are logged, counted in `drops` by
    reason ("truncated", "bad-length", "malformed") and dropped."""
    messages: list[NetlinkMessage] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < NLMSGHDR.size:
            logger.warning("netlink: dropped %d trailing bytes, shorter than a message header", len(data) - offset)
            _count(drops, "truncated")
            break
        length, message_type, flags, seq, port_id = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            logger.warning(
                "netlink: dropped the rest of a datagram: message type %d claims %d bytes, %d remain",
                message_type,
                length,
                len(data) - offset,
            )
            _count(drops, "bad-length")
            break
        payload = data[offset + NLMSGHDR.size : offset + length]
        try:
            message = _message_untrusted(message_type, flags, seq, port_id, payload)
        except MalformedMessageError as error:
            logger.warning("netlink: dropped message type %d seq %d: %s", message_type, seq, error)
            _count(drops, "malformed")
        else:
            if message is not None:
                messages.append(message)
        offset += _align(length)
    return messages


def _count(drops: Counter[str] | None, reason: str) -> None:
    if drops is not None:
        drops[reason] += 1
