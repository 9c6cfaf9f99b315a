"""macOS routing socket (PF_ROUTE) messages: a pure encoder and decoder, no sockets.

Layouts from xnu bsd/net/route.h (rt_msghdr, rt_metrics, RTM_*, RTF_*, RTA_*), bsd/net/rtsock.c (ROUNDUP32
sockaddr padding), bsd/net/if_dl.h (sockaddr_dl), bsd/netinet/in.h and bsd/netinet6/in6.h (sockaddr_in/_in6), in
apple-oss-distributions/xnu (macOS 13-15). 64-bit Darwin, host byte order (little-endian on x86_64 and arm64), addresses
and ports in network byte order. Darwin's address family numbers differ from Linux's, so they are spelled out here
instead of taken from `socket`.

Bytes from the kernel are untrusted: the decoders never raise; a malformed message is dropped with a log line.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections import Counter
from dataclasses import dataclass

logger = logging.getLogger(__name__)

Destination = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# bsd/sys/socket.h (Darwin numbering)
AF_UNSPEC = 0
AF_INET = 2
AF_ROUTE = 17
AF_LINK = 18
AF_INET6 = 30

# bsd/net/route.h
RTM_VERSION = 5
RTM_ADD = 0x1
RTM_DELETE = 0x2
RTM_CHANGE = 0x3
RTM_GET = 0x4
RTM_IFINFO = 0xE
ROUTE_CHANGE_TYPES = frozenset({RTM_ADD, RTM_DELETE, RTM_CHANGE, RTM_GET})
RTF_UP = 0x1
RTF_GATEWAY = 0x2
RTF_HOST = 0x4
RTF_STATIC = 0x800
RTF_PROTO1 = 0x8000  # "protocol specific routing flag": stored and reported, never interpreted by xnu's routing
RTF_WASCLONED = 0x20000
RTF_LOCAL = 0x200000
RTF_BROADCAST = 0x400000
RTF_MULTICAST = 0x800000
RTF_IFSCOPE = 0x1000000
RTA_DST = 0x1
RTA_GATEWAY = 0x2
RTA_NETMASK = 0x4
RTA_GENMASK = 0x8
RTA_IFP = 0x10
RTA_IFA = 0x20
RTA_AUTHOR = 0x40
RTA_BRD = 0x80
RTAX_MAX = 8  # sockaddrs follow the header in this bit order, only those present

# rt_msghdr, 92 bytes: msglen, version, type, index, (2 pad), flags, addrs, pid, seq, errno, use, inits, then
# rt_metrics (56 bytes): locks, mtu, hopcount, expire (signed), recvpipe, sendpipe, ssthresh, rtt, rttvar, pksent,
# filler[4].
RT_MSGHDR = struct.Struct("=HBBHxxiiiiiiIIIIiIIIIII4I")
RT_MSGHDR_PREFIX = struct.Struct("=HBB")  # common to every routing socket message: msglen, version, type
# if_msghdr (bsd/net/if.h), 112 bytes: msglen, version, type, addrs @4, flags @8, index @12, if_data @16.
IF_MSGHDR = struct.Struct("=HBBiiH")
IF_MSGHDR_LENGTH = 112
SOCKADDR_IN_LENGTH = 16
SOCKADDR_IN6_LENGTH = 28
SOCKADDR_DL_LENGTH = 20

# The marker of dmnc's routes: what `route add -net X -interface utunN -proto1` sets. RTF_STATIC|RTF_UP is what
# route(8) gives any route it adds; RTF_PROTO1 tells ours apart from another program's route through the same utun.
DMNC_ROUTE_FLAGS = RTF_UP | RTF_STATIC | RTF_PROTO1
# Routes the kernel derives itself (ARP/ND clones, local and broadcast addresses) are not routes anyone "owns".
DERIVED_ROUTE_FLAGS = RTF_WASCLONED | RTF_LOCAL | RTF_BROADCAST | RTF_MULTICAST

_ADDRESS_BYTES = {AF_INET: 4, AF_INET6: 16}
_ADDRESS_OFFSET = {AF_INET: 4, AF_INET6: 8}
_SOCKADDR_LENGTH = {AF_INET: SOCKADDR_IN_LENGTH, AF_INET6: SOCKADDR_IN6_LENGTH}
# The shortest sockaddr the kernel accepts and echoes per family: xnu's route_output takes an AF_INET sockaddr of
# offsetof(struct sockaddr_in, sin_zero) = 8 bytes or more (bsd/net/rtsock.c); only the address bytes matter.
_SOCKADDR_MIN_LENGTH = {AF_INET: 8, AF_INET6: SOCKADDR_IN6_LENGTH}
# A warning about one malformed message (destination and reason) is logged at its 1st, 2nd, 4th, 8th... sighting:
# the same kernel entry shows up in every table dump. At most this many distinct ones are remembered.
REPEATED_WARNINGS_REMEMBERED = 512


class RepeatedWarnings:
    """Which sightings of a repeated warning to log: the first, then each time the count doubles."""

    def __init__(self, remembered: int = REPEATED_WARNINGS_REMEMBERED) -> None:
        self._remembered = remembered
        self._seen: Counter[str] = Counter()

    def sighting(self, warning: str) -> int | None:
        """The sighting number of `warning` when it is to be logged, else None."""
        if warning not in self._seen and len(self._seen) >= self._remembered:
            self._seen.clear()  # bounded memory: forgotten warnings are logged once more
        self._seen[warning] += 1
        count = self._seen[warning]
        return count if count & (count - 1) == 0 else None


class MalformedMessageError(Exception):
    """A routing socket message does not follow the layout; only raised inside this module."""


def roundup(length: int) -> int:
    """ROUNDUP32 of bsd/net/rtsock.c: 4-byte alignment, and 4 bytes for a zero-length sockaddr."""
    return (1 + ((length - 1) | 3)) if length > 0 else 4


def family_of(destination: Destination | Address) -> int:
    return AF_INET if destination.version == 4 else AF_INET6


def encode_sockaddr_inet(address: Address) -> bytes:
    """sockaddr_in (16 B: len, family, port, addr, zero[8]) or sockaddr_in6 (28 B: ..., flowinfo, addr, scope)."""
    family = family_of(address)
    length = _SOCKADDR_LENGTH[family]
    data = bytearray(length)
    data[0], data[1] = length, family
    offset = _ADDRESS_OFFSET[family]
    data[offset : offset + _ADDRESS_BYTES[family]] = address.packed
    return bytes(data)


def encode_sockaddr_dl(interface_index: int) -> bytes:
    """sockaddr_dl naming an interface by index only: xnu resolves an AF_LINK gateway by sdl_index alone."""
    return struct.pack("=BBH", SOCKADDR_DL_LENGTH, AF_LINK, interface_index) + bytes(SOCKADDR_DL_LENGTH - 4)


@dataclass(frozen=True, slots=True)
class RouteSocketMessage:
    """An RTM_ADD/DELETE/CHANGE/GET message with the fields dmnc reads or writes."""

    message_type: int
    destination: Destination | None
    flags: int = 0
    interface_index: int = 0  # rtm_index: the route's interface in kernel messages
    gateway_interface: int | None = None  # an AF_LINK gateway (route through an interface), by index
    gateway: Address | None = None  # an IP gateway
    pid: int = 0
    seq: int = 0
    errno: int = 0

    @property
    def addrs(self) -> int:
        present = 0
        if self.destination is not None:
            present |= RTA_DST
            if not self._host_route():
                present |= RTA_NETMASK
        if self.gateway_interface is not None or self.gateway is not None:
            present |= RTA_GATEWAY
        return present

    def _host_route(self) -> bool:
        return bool(self.flags & RTF_HOST)


def encode_route_message(message: RouteSocketMessage) -> bytes:
    """The wire form of `message`, as route(8) builds it (sockaddrs padded with ROUNDUP32, full netmasks)."""
    destination = message.destination
    if message.gateway_interface is not None and message.gateway is not None:
        raise ValueError("a route has either an interface or an IP gateway, not both")
    if message.gateway is not None and destination is not None and message.gateway.version != destination.version:
        raise ValueError(f"gateway {message.gateway} does not match destination {destination}")
    if destination is not None and message.flags & RTF_HOST and destination.prefixlen != destination.max_prefixlen:
        raise ValueError(f"RTF_HOST with a network destination {destination}")
    sockaddrs = b""
    if destination is not None:
        sockaddrs += encode_sockaddr_inet(destination.network_address)
    if message.gateway_interface is not None:
        sockaddrs += encode_sockaddr_dl(message.gateway_interface)
    elif message.gateway is not None:
        sockaddrs += encode_sockaddr_inet(message.gateway)
    if destination is not None and not message.flags & RTF_HOST:
        sockaddrs += encode_sockaddr_inet(destination.netmask)
    header = RT_MSGHDR.pack(
        RT_MSGHDR.size + len(sockaddrs),
        RTM_VERSION,
        message.message_type,
        message.interface_index,
        message.flags,
        message.addrs,
        message.pid,
        message.seq,
        message.errno,
        0,
        0,
        *([0] * 14),
    )
    return header + sockaddrs


def _sockaddrs_untrusted(data: bytes, addrs: int) -> dict[int, bytes]:
    """Each present sockaddr's bytes (sa_len of them), by RTA_* bit."""
    found: dict[int, bytes] = {}
    offset = 0
    for bit in (1 << index for index in range(RTAX_MAX)):
        if not addrs & bit:
            continue
        if offset >= len(data):
            raise MalformedMessageError(f"sockaddr {bit:#x} announced but the message ends")
        length = data[offset]
        if offset + length > len(data):
            raise MalformedMessageError(f"sockaddr {bit:#x} of {length} bytes overruns the message")
        found[bit] = data[offset : offset + length]
        offset += roundup(length)
    return found


def _inet_address_untrusted(sockaddr: bytes, family: int) -> Address:
    if len(sockaddr) < _SOCKADDR_MIN_LENGTH[family]:
        raise MalformedMessageError(f"sockaddr of family {family} with {len(sockaddr)} bytes")
    offset = _ADDRESS_OFFSET[family]
    raw = sockaddr[offset : offset + _ADDRESS_BYTES[family]]
    return ipaddress.IPv4Address(raw) if family == AF_INET else ipaddress.IPv6Address(raw)


def _prefix_length_untrusted(sockaddr: bytes, family: int) -> int:
    # The kernel trims netmasks to their last non-zero byte (sa_len may be < the family's sockaddr size, even 0)
    # and may leave sa_family 0: read what is there, zero-fill the rest, take the family from the destination.
    offset = _ADDRESS_OFFSET[family]
    raw = sockaddr[offset : offset + _ADDRESS_BYTES[family]].ljust(_ADDRESS_BYTES[family], b"\0")
    bits = int.from_bytes(raw, "big")
    width = _ADDRESS_BYTES[family] * 8
    prefix = width - ((~bits & ((1 << width) - 1)).bit_length())
    if bits != ((1 << width) - 1) ^ ((1 << (width - prefix)) - 1):
        raise MalformedMessageError(f"non-contiguous netmask {raw.hex()}")
    return prefix


def _destination_untrusted(sockaddrs: dict[int, bytes]) -> Destination | None:
    destination_sockaddr = sockaddrs[RTA_DST]
    family = destination_sockaddr[1] if len(destination_sockaddr) > 1 else AF_UNSPEC
    if family not in _ADDRESS_BYTES:
        return None
    address = _inet_address_untrusted(destination_sockaddr, family)
    # No netmask is a host route whatever the flags: xnu's radix tree keeps a route added without RTA_NETMASK
    # under a NULL mask even without RTF_HOST (bsd/net/route.c rtrequest_common_locked clears the mask for RTF_HOST,
    # never the reverse), and dumps it so.
    if RTA_NETMASK in sockaddrs:
        prefix = _prefix_length_untrusted(sockaddrs[RTA_NETMASK], family)
    else:
        prefix = _ADDRESS_BYTES[family] * 8
    try:
        return ipaddress.ip_network((address, prefix))
    except ValueError as error:
        raise MalformedMessageError(f"destination {address}/{prefix} has host bits set") from error


def _gateway_untrusted(sockaddr: bytes, family: int) -> tuple[int | None, Address | None]:
    """(interface index, None) for an AF_LINK gateway, (None, address) for an IP one, (None, None) otherwise."""
    if len(sockaddr) >= 4 and sockaddr[1] == AF_LINK:
        index: int = struct.unpack_from("=H", sockaddr, 2)[0]
        return index, None
    if len(sockaddr) >= 2 and sockaddr[1] == family:
        return None, _inet_address_untrusted(sockaddr, family)
    return None, None


def decode_route_message_untrusted(
    data: bytes, drops: Counter[str] | None = None, warnings: RepeatedWarnings | None = None
) -> RouteSocketMessage | None:
    """One routing socket message (exactly `data`); None, counted and logged, when malformed, or when not a route
    message of AF_INET/AF_INET6 (interface and address messages have other headers and are skipped without a log).
    With `warnings`, a problem seen again is logged only at its 2nd, 4th, 8th... sighting; it is always counted."""
    try:
        return _route_message_untrusted(data)
    except MalformedMessageError as error:
        _count(drops, "malformed")
        sighting = 1 if warnings is None else warnings.sighting(str(error))
        if sighting == 1:
            logger.warning("routing socket: dropped a message: %s", error)
        elif sighting is not None:
            logger.warning("routing socket: dropped a message: %s (seen %d times)", error, sighting)
        return None


def _route_message_untrusted(data: bytes) -> RouteSocketMessage | None:
    if len(data) < RT_MSGHDR_PREFIX.size:
        raise MalformedMessageError(f"{len(data)} bytes, shorter than any message header")
    length, version, message_type = RT_MSGHDR_PREFIX.unpack_from(data)
    if length != len(data):
        raise MalformedMessageError(f"rtm_msglen {length} for a message of {len(data)} bytes")
    if version != RTM_VERSION:
        raise MalformedMessageError(f"version {version}, expected {RTM_VERSION}")
    if message_type not in ROUTE_CHANGE_TYPES:
        return None
    if len(data) < RT_MSGHDR.size:
        raise MalformedMessageError(f"route message of {len(data)} bytes, rt_msghdr needs {RT_MSGHDR.size}")
    _, _, _, index, flags, addrs, pid, seq, errno, *_ = RT_MSGHDR.unpack_from(data)
    sockaddrs = _sockaddrs_untrusted(data[RT_MSGHDR.size :], addrs)
    if RTA_DST not in sockaddrs:
        raise MalformedMessageError("route message without a destination")
    destination = _destination_untrusted(sockaddrs)
    if destination is None:
        return None  # AF_LINK (ARP/ND entries) and other families carry no route dmnc manages
    gateway_interface, gateway = _gateway_untrusted(sockaddrs.get(RTA_GATEWAY, b""), family_of(destination))
    return RouteSocketMessage(
        message_type=message_type,
        destination=destination,
        flags=flags,
        interface_index=index,
        gateway_interface=gateway_interface,
        gateway=gateway,
        pid=pid,
        seq=seq,
        errno=errno,
    )


def decode_messages_untrusted(
    data: bytes, drops: Counter[str] | None = None, warnings: RepeatedWarnings | None = None
) -> list[RouteSocketMessage]:
    """Every route message in a buffer of consecutive messages (a NET_RT_DUMP sysctl); the walk stops, with a log
    line, at a length that cannot be right, because the next message's start is unknown after it."""
    messages: list[RouteSocketMessage] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < RT_MSGHDR_PREFIX.size:
            logger.warning("routing socket: dropped %d trailing bytes", len(data) - offset)
            _count(drops, "truncated")
            break
        (length,) = struct.unpack_from("=H", data, offset)
        if length < RT_MSGHDR_PREFIX.size or offset + length > len(data):
            logger.warning("routing socket: dropped the rest of a dump: message claims %d bytes", length)
            _count(drops, "bad-length")
            break
        message = decode_route_message_untrusted(data[offset : offset + length], drops, warnings)
        if message is not None:
            messages.append(message)
        offset += length
    return messages


def decode_interface_index_untrusted(data: bytes, drops: Counter[str] | None = None) -> int | None:
    """The interface index of an RTM_IFINFO message (an interface went up or down, or changed), else None."""
    if len(data) < IF_MSGHDR.size:
        return None
    length, version, message_type, _addrs, _flags, index = IF_MSGHDR.unpack_from(data)
    if message_type != RTM_IFINFO or version != RTM_VERSION:
        return None
    if length != len(data) or length < IF_MSGHDR_LENGTH:
        logger.warning("routing socket: dropped an interface message of %d bytes claiming %d", len(data), length)
        _count(drops, "bad-length")
        return None
    return int(index)


def _count(drops: Counter[str] | None, reason: str) -> None:
    if drops is not None:
        drops[reason] += 1


# RTM_GET: which route the kernel really uses for an address, as `route -n get ADDRESS` asks (network_cmds
# route.c rtmsg: RTA_DST plus an empty AF_LINK sockaddr as RTA_IFP). xnu's route_output (bsd/net/rtsock.c, case
# RTM_GET and its `report:` path) looks the destination up without a netmask (the best match, the unscoped table
# as for any unbound socket), writes the route's DST, GATEWAY, NETMASK and GENMASK into the reply and, only when
# the request carried RTA_IFP or RTA_IFA, the interface's link address (RTA_IFP, a sockaddr_dl with its name), the
# route's source address (RTA_IFA) and the interface index into rtm_index. The reply keeps the request's pid and
# seq, gains RTF_DONE, and is echoed to the sending socket too (routing sockets are SO_USELOOPBACK).
RTF_DONE = 0x40
SOCKADDR_DL_NAME_LENGTH_OFFSET = 5  # bsd/net/if_dl.h sockaddr_dl: len, family, index(2), type, nlen, alen, slen
SOCKADDR_DL_NAME_OFFSET = 8  # sdl_data: the name, then the link-layer address


@dataclass(frozen=True, slots=True)
class RouteLookup:
    """The kernel's answer to an RTM_GET: the route it picked, on which interface (index and name)."""

    route: RouteSocketMessage  # interface_index is the interface the kernel sends through (rtm_index)
    interface_name: str | None  # from RTA_IFP; None when the reply named no interface

    @property
    def interface_index(self) -> int:
        return self.route.interface_index


def encode_lookup_request(address: Address, *, pid: int, seq: int) -> bytes:
    """The RTM_GET for `address` (see above), byte for byte what `route -n get ADDRESS` writes."""
    sockaddrs = encode_sockaddr_inet(address) + encode_sockaddr_dl(0)
    header = RT_MSGHDR.pack(
        RT_MSGHDR.size + len(sockaddrs),
        RTM_VERSION,
        RTM_GET,
        0,
        RTF_UP | RTF_HOST | RTF_STATIC,  # route(8)'s flags for a host lookup; xnu's lookup does not read them
        RTA_DST | RTA_IFP,
        pid,
        seq,
        0,
        0,
        0,
        *([0] * 14),
    )
    return header + sockaddrs


def decode_lookup_reply_untrusted(
    data: bytes, *, pid: int, seq: int, drops: Counter[str] | None = None, warnings: RepeatedWarnings | None = None
) -> RouteLookup | None:
    """The answer to our RTM_GET `seq` from process `pid`; None for any other message (the lookup socket also
    receives every other process's routing messages), for a refused lookup (rtm_errno), and, counted and logged,
    for a malformed reply."""
    message = decode_route_message_untrusted(data, drops, warnings)
    if message is None or message.message_type != RTM_GET or message.pid != pid or message.seq != seq:
        return None
    if message.errno:
        return None
    try:
        name = _interface_name_untrusted(data)
    except MalformedMessageError as error:
        _count(drops, "malformed")
        logger.warning("routing socket: dropped a lookup reply: %s", error)
        return None
    return RouteLookup(message, name)


def _interface_name_untrusted(data: bytes) -> str | None:
    """The interface name in an already decoded route message's RTA_IFP sockaddr_dl, if it has one."""
    addrs = RT_MSGHDR.unpack_from(data)[5]
    link = _sockaddrs_untrusted(data[RT_MSGHDR.size :], addrs).get(RTA_IFP)
    if link is None or len(link) < SOCKADDR_DL_NAME_OFFSET or link[1] != AF_LINK:
        return None
    return link_name_untrusted(link) or None


def link_name_untrusted(link: bytes) -> str:
    """The interface name in a sockaddr_dl of at least SOCKADDR_DL_NAME_OFFSET bytes (sdl_nlen bytes of sdl_data);
    raises MalformedMessageError when the name overruns the sockaddr."""
    name_length = link[SOCKADDR_DL_NAME_LENGTH_OFFSET]
    name = link[SOCKADDR_DL_NAME_OFFSET : SOCKADDR_DL_NAME_OFFSET + name_length]
    if len(name) != name_length:
        raise MalformedMessageError("interface name overruns its link address")
    return name.decode("ascii", errors="replace")
