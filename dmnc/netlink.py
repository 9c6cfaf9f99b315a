"""Netlink framing shared by every rtnetlink user in dmnc: headers, attributes, acknowledgements. Pure, no sockets.

The message format is RFC 3549 section 2.3.2 (nlmsghdr, 4-byte alignment) as Linux implements it; layouts and
numbers come from the Linux UAPI headers `linux/netlink.h` (nlmsghdr, nlmsgerr, NLMSG_*, NLM_F_*) and
`linux/rtnetlink.h` (rtattr, RTA_ALIGNTO). Everything is host byte order. What a message's payload means (a route,
a link, an address) is its family's business: `dmnc.routes.rtnetlink` and `dmnc.tun.rtnetlink` build on this module.

Bytes from the kernel are untrusted: `decode_messages_untrusted` never raises. A malformed message is dropped with
one log line and counted by reason; decoding stops at a malformed header because the next message's offset is
unknown after it.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Never, TypeVar

logger = logging.getLogger(__name__)

# linux/socket.h: Linux's numbering, spelled out so these pure modules mean the same on any host (Darwin's
# AF_INET6 is 30, and these bytes are decoded in tests everywhere).
AF_UNSPEC = 0
AF_INET = 2
AF_INET6 = 10
SOL_NETLINK = 270

# linux/netlink.h
NETLINK_ROUTE = 0
NETLINK_CAP_ACK = 10  # setsockopt: ACKs do not echo the request payload
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

# linux/rtnetlink.h: struct rtattr, the type-length-value attribute of every rtnetlink message, and the link
# message both the route monitor (link notifications) and the TUN setup (link settings) speak.
RTATTR = struct.Struct("=HH")  # rta_len, rta_type
RTA_ALIGNTO = 4
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFINFOMSG = struct.Struct("=BxHiII")  # ifi_family, pad, ifi_type, ifi_index, ifi_flags, ifi_change
RT_SCOPE_UNIVERSE = 0
# linux/rtnetlink.h and linux/if_addr.h: the address message, which the TUN setup sends (its addresses) and the
# host watch reads (the host's other addresses).
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
IFADDRMSG = struct.Struct("=BBBBI")  # ifa_family, ifa_prefixlen, ifa_flags, ifa_scope, ifa_index
IFA_ADDRESS = 1  # the address, or the far end of a point-to-point link (then the prefix length is the peer's)
IFA_LOCAL = 2  # this end of a point-to-point link; absent (or equal to IFA_ADDRESS) otherwise

U32 = struct.Struct("=I")


class MalformedMessageError(Exception):
    """A message from the kernel does not follow the layout; raised only by payload decoders, caught here."""


@dataclass(frozen=True, slots=True)
class Header:
    """A decoded nlmsghdr; `port_id` is nlmsg_pid, the sender's netlink port."""

    message_type: int
    flags: int
    seq: int
    port_id: int


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


ControlMessage = ErrorMessage | DoneMessage | OverrunMessage
PayloadMessage = TypeVar("PayloadMessage")
# A family's payload decoders by message type: each makes its message of a header and payload or raises
# MalformedMessageError. Types without one (NLMSG_NOOP, groups nobody asked for) are skipped.
PayloadDecoders = Mapping[int, Callable[[Header, bytes], PayloadMessage]]
# For a reader that wants only the control messages (acknowledgements).
NO_PAYLOADS: PayloadDecoders[Never] = {}


def group_mask(*groups: int) -> int:
    """The legacy `nl_groups` bind mask for multicast group numbers (bit group-1, netlink(7); the RTMGRP_*
    constants of linux/rtnetlink.h are these masks for the RTNLGRP_* groups)."""
    mask = 0
    for group in groups:
        mask |= 1 << (group - 1)
    return mask


def align(length: int, alignment: int = NLMSG_ALIGNTO) -> int:
    return (length + alignment - 1) & ~(alignment - 1)


def encode_attribute(attribute_type: int, value: bytes) -> bytes:
    """One rtattr, padded to RTA_ALIGNTO (rta_len counts the value, not the padding)."""
    length = RTATTR.size + len(value)
    return RTATTR.pack(length, attribute_type) + value + b"\0" * (align(length, RTA_ALIGNTO) - length)


def encode_message(header: Header, payload: bytes) -> bytes:
    """nlmsghdr followed by `payload`, padded to NLMSG_ALIGNTO so that messages can be concatenated (nlmsg_len
    counts the payload, not the padding, as the kernel's nlmsg_put does)."""
    length = NLMSGHDR.size + len(payload)
    header_bytes = NLMSGHDR.pack(length, header.message_type, header.flags, header.seq, header.port_id)
    return header_bytes + payload + b"\0" * (align(length) - length)


def encode_error_message(message: ErrorMessage) -> bytes:
    """An NLMSG_ERROR as the kernel sends it with NETLINK_CAP_ACK (the request's header echoed, no payload)."""
    echoed_request = NLMSGHDR.pack(NLMSGHDR.size, 0, 0, message.seq, message.port_id)
    header = Header(NLMSG_ERROR, 0, message.seq, message.port_id)
    return encode_message(header, NLMSGERR.pack(message.error) + echoed_request)


def encode_done_message(message: DoneMessage) -> bytes:
    return encode_message(Header(NLMSG_DONE, message.flags, message.seq, message.port_id), NLMSGERR.pack(0))


def attributes_untrusted(data: bytes) -> dict[int, bytes]:
    """The rtattrs in `data`, by type (a repeated type keeps its last value)."""
    attributes: dict[int, bytes] = {}
    offset = 0
    while offset + RTATTR.size <= len(data):
        length, attribute_type = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size or offset + length > len(data):
            raise MalformedMessageError(f"attribute {attribute_type} claims {length} bytes at offset {offset}")
        attributes[attribute_type] = data[offset + RTATTR.size : offset + length]
        offset += align(length, RTA_ALIGNTO)
    return attributes


def u32_untrusted(value: bytes, name: str) -> int:
    if len(value) != U32.size:
        raise MalformedMessageError(f"{name} of {len(value)} bytes")
    number: int = U32.unpack(value)[0]
    return number


def _control_message_untrusted(header: Header, payload: bytes) -> ControlMessage | None:
    if header.message_type == NLMSG_ERROR:
        if len(payload) < NLMSGERR.size:
            raise MalformedMessageError(f"error message payload of {len(payload)} bytes")
        error: int = NLMSGERR.unpack_from(payload)[0]
        if error > 0:
            raise MalformedMessageError(f"error message with positive errno {error}")
        return ErrorMessage(seq=header.seq, port_id=header.port_id, error=error)
    if header.message_type == NLMSG_DONE:
        return DoneMessage(seq=header.seq, port_id=header.port_id, flags=header.flags)
    if header.message_type == NLMSG_OVERRUN:
        return OverrunMessage(seq=header.seq, port_id=header.port_id)
    return None  # NLMSG_NOOP, and the family's own types


def decode_messages_untrusted(
    data: bytes,
    decoders: PayloadDecoders[PayloadMessage],
    drops: Counter[str] | None = None,
) -> list[ControlMessage | PayloadMessage]:
    """Every netlink message in one datagram from the kernel: control messages (errors/acks, done, overrun) and
    what `decoders` make of the others. Malformed ones are logged, counted in `drops` by reason
    ("truncated", "bad-length", "malformed") and dropped."""
    messages: list[ControlMessage | PayloadMessage] = []
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
        header = Header(message_type, flags, seq, port_id)
        payload = data[offset + NLMSGHDR.size : offset + length]
        try:
            decoded: ControlMessage | PayloadMessage | None = _control_message_untrusted(header, payload)
            if decoded is None and message_type in decoders:
                decoded = decoders[message_type](header, payload)
        except MalformedMessageError as error:
            logger.warning("netlink: dropped message type %d seq %d: %s", message_type, seq, error)
            _count(drops, "malformed")
        else:
            if decoded is not None:
                messages.append(decoded)
        offset += align(length)
    return messages


def _count(drops: Counter[str] | None, reason: str) -> None:
    if drops is not None:
        drops[reason] += 1
