"""The tunnel's one-way door: packets from the VM reach the host only as part of a flow the host started.

A pure core (no I/O, no clock: `now` is an argument, as in the WireGuard core). The data path hands it every
packet it reads from the TUN (`outbound`: host -> VM) before encryption and every packet the VM sent
(`inbound`: VM -> host) after decryption, before the TUN write. `outbound` remembers flows; `inbound` delivers:

- TCP (RFC 9293 section 3.1): segments of a flow the host started; never a SYN without ACK from the VM.
- UDP (RFC 768): datagrams to a host address and port that recently sent to that remote address and port.
- ICMP (RFC 792) / ICMPv6 (RFC 4443): echo replies to the host's echo requests, and errors whose quoted packet is
  one the host sent in a live flow.
- Fragments (RFC 791 section 3.2, RFC 8200 section 4.5): the first fragment is judged as above; later fragments
  only when a first fragment with the same addresses, protocol and identification was delivered within
  `FRAGMENT_WINDOW_S`. So large UDP replies (DNS with EDNS) keep working.
- New flows from the VM only to the host ports `set_allowed_inbound` lists.

Everything else is dropped and counted by reason (`FilterDrop`): packets not addressed to one of the host's own
tunnel addresses, multicast and broadcast, neighbour discovery and redirects (ICMPv6 133-137, ICMP 5, 9, 10),
protocols other than TCP, UDP, ICMP and ICMPv6, and packets too short to parse. Multicast from the host (router
solicitations, MLD, which Linux sends even from `::`) never leaves it.

Memory is bounded: at most `max_flows` flows and `max_fragments` fragment trains, each table kept in order of
last use, the oldest evicted first; entries carry their own expiry and are swept from the old end. Headers are read
with plain indexing (only the fixed fields needed, no struct unpacking of whole headers): this runs per packet. The
bulk of the traffic, TCP and UDP in IPv4 without options or fragments and in IPv6 without extension headers, takes a
fast path inlined in `outbound` and `inbound`; `judge_outbound` and `judge_inbound` are the full rules, and the
fast paths decide as they would.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

# IANA protocol numbers (RFC 790 / the IANA "Assigned Internet Protocol Numbers" registry).
ICMP = 1
TCP = 6
UDP = 17
ICMPV6 = 58
# RFC 8200 section 4: extension headers walked to find the upper layer (hop-by-hop, routing, destination options),
# and the fragment header.
_HOP_BY_HOP, _ROUTING, _DESTINATION_OPTIONS, _FRAGMENT = 0, 43, 60, 44
_LENGTH_IN_8_OCTETS = (_HOP_BY_HOP, _ROUTING, _DESTINATION_OPTIONS)
# More extension headers than this in one packet: treated as unparsable (RFC 8200 section 4.1 lists at most one of
# each, destination options twice).
_MAX_EXTENSION_HEADERS = 8
# The fast paths: IPv4 (RFC 791 section 3.1) version 4 with a 5-word header, the first octet of 224.0.0.0/4
# (multicast, then 240.0.0.0/4 reserved and the limited broadcast), IPv6's ff00::/8 (RFC 4291 section 2.7), and the
# shortest packets they take: an IPv4 or IPv6 header plus a TCP header (RFC 9293 section 3.1); UDP datagrams shorter
# than that take the general path.
_IPV4_NO_OPTIONS = 0x45
_IPV4_MULTICAST_FIRST_OCTET = 224
_IPV6_MULTICAST_FIRST_OCTET = 0xFF
_FAST_PATH_MIN_SIZE = 40
_FAST_PATH_MIN_SIZE_IPV6 = 60
# RFC 9293 section 3.1: control bits in header byte 13.
_TCP_SYN, _TCP_ACK = 0x02, 0x10
# ICMP (RFC 792, RFC 1256) and ICMPv6 (RFC 4443, RFC 4861) types.
_ICMP_ECHO_REPLY, _ICMP_ECHO_REQUEST = 0, 8
_ICMP_ERRORS = frozenset((3, 4, 11, 12))  # destination unreachable, source quench, time exceeded, parameter problem
_ICMP_ROUTER_MESSAGES = frozenset((5, 9, 10))  # redirect, router advertisement, router solicitation
_ICMPV6_ECHO_REQUEST, _ICMPV6_ECHO_REPLY = 128, 129
_ICMPV6_ERRORS = frozenset((1, 2, 3, 4))  # destination unreachable, packet too big, time exceeded, parameter problem
_ICMPV6_ROUTER_MESSAGES = frozenset(range(133, 138))  # RS, RA, NS, NA, redirect
# An ICMP error quotes the offending packet's header plus at least 8 octets (RFC 792; RFC 4443 section 2.4 (c)):
# enough for the ports and the echo identifier.
_ICMP_HEADER = 8

# Idle limits. TCP: RFC 5382 REQ-5, an established flow must not expire in less than 2 h 4 min. UDP: RFC 4787
# REQ-5, not less than 2 min. ICMP queries: RFC 5508 REQ-1, not less than 60 s (the UDP limit covers it).
TCP_IDLE_S = 7440.0
DATAGRAM_IDLE_S = 120.0
# Later fragments must follow their first fragment within this long: the reassembly timeout of Linux
# (ipfrag_time, Documentation/networking/ip-sysctl.rst) and half of RFC 8200 section 4.5's 60 s.
FRAGMENT_WINDOW_S = 30.0
DEFAULT_MAX_FLOWS = 16384
DEFAULT_MAX_FRAGMENTS = 1024
# Swept at most this often; lookups check each entry's own expiry, so sweeping only frees memory.
_SWEEP_INTERVAL_S = 1.0

# (protocol, host address, remote address, host port or echo identifier, remote port or b"")
FlowKey = tuple[int, bytes, bytes, bytes, bytes]
# (source, destination, protocol (44 for IPv6), identification)
FragmentKey = tuple[bytes, bytes, int, bytes]
_Key = TypeVar("_Key", FlowKey, FragmentKey)


class FilterDrop(enum.Enum):
    """Why the filter dropped a packet; `dmnc status` shows the names in lower case."""

    UNPARSABLE_PACKET = enum.auto()  # too short for the headers the decision needs, or a bad header length
    MULTICAST_OR_BROADCAST = enum.auto()  # from the VM to a multicast or broadcast address
    NOT_TO_HOST_ADDRESS = enum.auto()  # from the VM to an address that is not one of the host's tunnel addresses
    ROUTER_MESSAGE = enum.auto()  # ICMPv6 133-137 (RS, RA, NS, NA, redirect), ICMP redirect and router discovery
    PROTOCOL_NOT_ALLOWED = enum.auto()  # neither TCP, UDP, ICMP nor ICMPv6
    INBOUND_NOT_ALLOWED = enum.auto()  # a new flow from the VM to a host port not given with --allow-inbound
    FRAGMENT_NOT_MATCHED = enum.auto()  # a later fragment without a delivered first fragment
    OUTBOUND_MULTICAST = enum.auto()  # from the host to a multicast address (router solicitation, MLD)


@dataclass(frozen=True, order=True)
class InboundPort:
    """A host port the VM may open new flows to (`--allow-inbound PORT[/tcp|/udp]`)."""

    port: int
    protocol: str = "tcp"

    def __str__(self) -> str:
        return str(self.port) if self.protocol == "tcp" else f"{self.port}/{self.protocol}"


class FlowFilter:
    """Remembers the host's flows and judges the VM's packets against them. Never raises on packet input."""

    def __init__(
        self,
        host_addresses: Iterable[bytes],
        *,
        allowed_inbound: Iterable[InboundPort] = (),
        max_flows: int = DEFAULT_MAX_FLOWS,
        max_fragments: int = DEFAULT_MAX_FRAGMENTS,
    ) -> None:
        """`host_addresses`: the host's own tunnel addresses, packed (4 or 16 bytes), the only destinations the
        VM's packets may have."""
        if max_flows < 1 or max_fragments < 1:
            raise ValueError("max_flows and max_fragments must be at least 1")
        self.drops: Counter[FilterDrop] = Counter()
        # Host ports refused for the first time, as "8088" or "5353/udp", for the data path to log once each.
        self.newly_refused: list[str] = []
        self._host_addresses = frozenset(bytes(address) for address in host_addresses)
        self._max_flows = max_flows
        self._max_fragments = max_fragments
        # key -> expiry time; ordered by last use, oldest first.
        self._flows: OrderedDict[FlowKey, float] = OrderedDict()
        self._fragments: OrderedDict[FragmentKey, float] = OrderedDict()
        self._refused: set[tuple[int, bytes]] = set()
        self._allowed_tcp: frozenset[bytes] = frozenset()
        self._allowed_udp: frozenset[bytes] = frozenset()
        self._next_sweep = float("-inf")
        # The flow `_remember` renewed last, and when: the newest entry of `_flows`, expiring at that time plus its
        # idle limit (sweeps and evictions take only entries older than it).
        self._newest: FlowKey | None = None
        self._newest_at = float("nan")
        self.set_allowed_inbound(allowed_inbound)

    def set_allowed_inbound(self, ports: Iterable[InboundPort]) -> None:
        """The host ports the VM may open new flows to (replaces the previous set)."""
        ports = tuple(ports)
        self._allowed_tcp = frozenset(p.port.to_bytes(2, "big") for p in ports if p.protocol == "tcp")
        self._allowed_udp = frozenset(p.port.to_bytes(2, "big") for p in ports if p.protocol == "udp")

    @property
    def flow_count(self) -> int:
        return len(self._flows)

    @property
    def fragment_count(self) -> int:
        return len(self._fragments)

    # Host -> VM

    def outbound(self, packet: bytes, now: float) -> bool:
        """A packet from the host's TUN: True to send it on (its flow remembered), False to drop it (counted)."""
        if now >= self._next_sweep:
            self._sweep(now)
        # The bulk of what the host sends takes a fast path: what judge_outbound would do for it.
        key = bulk_flow_key(packet, False)
        if key is not None:
            if now != self._newest_at or key != self._newest:
                self._remember(key, now)
            return True
        return self.judge_outbound(packet, now)

    def judge_outbound(self, packet: bytes, now: float) -> bool:
        """`outbound` without its fast path: the full treatment of every kind of packet (tests compare the two)."""
        if now >= self._next_sweep:
            self._sweep(now)
        size = len(packet)
        if size >= 20 and packet[0] >> 4 == 4:
            if packet[16] >= _IPV4_MULTICAST_FIRST_OCTET:
                self.drops[FilterDrop.OUTBOUND_MULTICAST] += 1
                return False
        elif size >= 40 and packet[0] >> 4 == 6 and packet[24] == 0xFF:  # ff00::/8 (RFC 4291 section 2.7)
            self.drops[FilterDrop.OUTBOUND_MULTICAST] += 1
            return False
        key = outbound_flow_key(packet, 0)
        if key is not None:
            self._remember(key, now)
        return True

    # VM -> host

    def inbound(self, packet: bytes, now: float) -> bool:
        """A packet the VM sent, decrypted: True to write it to the TUN, False to drop it (counted)."""
        if now >= self._next_sweep:
            self._sweep(now)
        # The bulk of what the VM sends takes a fast path: a reply of a live flow to a host address passes here exactly
        # when `judge_inbound` would pass it; anything else, and any packet this does not pass, is judged in full there.
        key = bulk_flow_key(packet, True)
        if key is not None and key[1] in self._host_addresses:
            if now == self._newest_at and key == self._newest:
                return True
            flows = self._flows
            expiry = flows.get(key)
            if expiry is not None and expiry >= now:
                flows[key] = now + (TCP_IDLE_S if key[0] == TCP else DATAGRAM_IDLE_S)
                flows.move_to_end(key)
                self._newest, self._newest_at = key, now
                return True
        return self.judge_inbound(packet, now)

    def judge_inbound(self, packet: bytes, now: float) -> bool:  # noqa: PLR0911  # one return per verdict
        """`inbound` without its fast path: the full judgement of every kind of packet (tests compare the two)."""
        if now >= self._next_sweep:
            self._sweep(now)
        size = len(packet)
        if size < 20:
            return self._drop(FilterDrop.UNPARSABLE_PACKET)
        version = packet[0] >> 4
        if version == 6:
            return self._inbound_ipv6(packet, now)
        if version != 4:
            return self._drop(FilterDrop.UNPARSABLE_PACKET)
        header = (packet[0] & 0x0F) * 4
        if header < 20 or size < header:
            return self._drop(FilterDrop.UNPARSABLE_PACKET)
        if packet[16] >= _IPV4_MULTICAST_FIRST_OCTET:
            return self._drop(FilterDrop.MULTICAST_OR_BROADCAST)
        destination = packet[16:20]
        if destination not in self._host_addresses:
            return self._drop(FilterDrop.NOT_TO_HOST_ADDRESS)
        protocol = packet[9]
        fragment: FragmentKey | None = None
        if packet[6] & 0x3F or packet[7]:  # more fragments, or a fragment offset (RFC 791 section 3.1)
            fragment = (packet[12:16], destination, protocol, packet[4:6])
            if packet[6] & 0x1F or packet[7]:
                return self._later_fragment(fragment, now)
        return self._upper_layer(packet, header, protocol, packet[12:16], destination, fragment=fragment, now=now)

    def _inbound_ipv6(self, packet: bytes, now: float) -> bool:
        if len(packet) < 40:
            return self._drop(FilterDrop.UNPARSABLE_PACKET)
        if packet[24] == 0xFF:
            return self._drop(FilterDrop.MULTICAST_OR_BROADCAST)
        destination = packet[24:40]
        if destination not in self._host_addresses:
            return self._drop(FilterDrop.NOT_TO_HOST_ADDRESS)
        upper = _ipv6_upper_layer(packet, 0)
        if upper is None:
            return self._drop(FilterDrop.UNPARSABLE_PACKET)
        protocol, header, fragment_id, later = upper
        source = packet[8:24]
        # RFC 8200 section 4.5: the fragment headers of one packet may carry different Next Header values, so
        # IPv6 fragments match by addresses and identification (the protocol slot is the fragment header's 44).
        fragment = None if fragment_id is None else (source, destination, _FRAGMENT, fragment_id)
        if later and fragment is not None:
            return self._later_fragment(fragment, now)
        return self._upper_layer(packet, header, protocol, source, destination, fragment=fragment, now=now)

    def _upper_layer(
        self,
        packet: bytes,
        header: int,
        protocol: int,
        source: bytes,
        destination: bytes,
        *,
        fragment: FragmentKey | None,
        now: float,
    ) -> bool:
        """Judge a whole packet or a first fragment by its upper-layer header at `header`."""
        if protocol in (TCP, UDP):
            delivered = self._transport(packet, header, protocol, source, destination, now=now)
        elif protocol in (ICMP, ICMPV6):
            delivered = self._icmp(packet, header, protocol, source, destination, now=now)
        else:
            delivered = self._drop(FilterDrop.PROTOCOL_NOT_ALLOWED)
        if delivered and fragment is not None and fragment not in self._fragments:
            # The window runs from the first fragment: later ones do not extend it.
            self._fragments[fragment] = now + FRAGMENT_WINDOW_S
            if len(self._fragments) > self._max_fragments:
                self._fragments.popitem(last=False)
        return delivered

    def _transport(
        self, packet: bytes, header: int, protocol: int, source: bytes, destination: bytes, *, now: float
    ) -> bool:
        if len(packet) < header + (14 if protocol == TCP else 8):
            return self._drop(FilterDrop.UNPARSABLE_PACKET)
        host_port = packet[header + 2 : header + 4]
        key = (protocol, destination, source, host_port, packet[header : header + 2])
        new_connection = protocol == TCP and packet[header + 13] & (_TCP_SYN | _TCP_ACK) == _TCP_SYN
        if not new_connection and self._live(key, now):
            return True
        if host_port in (self._allowed_tcp if protocol == TCP else self._allowed_udp):
            self._remember(key, now)
            return True
        if new_connection or protocol == UDP:
            self._note_refused(protocol, host_port)
        return self._drop(FilterDrop.INBOUND_NOT_ALLOWED)

    def _icmp(
        self, packet: bytes, header: int, protocol: int, source: bytes, destination: bytes, *, now: float
    ) -> bool:
        if (protocol == ICMP) != (len(destination) == 4):  # ICMP in IPv6 or ICMPv6 in IPv4
            return self._drop(FilterDrop.PROTOCOL_NOT_ALLOWED)
        if len(packet) < header + _ICMP_HEADER:
            return self._drop(FilterDrop.UNPARSABLE_PACKET)
        kind = packet[header]
        if kind == (_ICMP_ECHO_REPLY if protocol == ICMP else _ICMPV6_ECHO_REPLY):
            if self._live((protocol, destination, source, packet[header + 4 : header + 6], b""), now):
                return True
        elif kind in (_ICMP_ERRORS if protocol == ICMP else _ICMPV6_ERRORS):
            quoted = outbound_flow_key(packet, header + _ICMP_HEADER)
            if quoted is not None and quoted[1] == destination and self._live(quoted, now):
                return True
        elif kind in (_ICMP_ROUTER_MESSAGES if protocol == ICMP else _ICMPV6_ROUTER_MESSAGES):
            return self._drop(FilterDrop.ROUTER_MESSAGE)
        return self._drop(FilterDrop.INBOUND_NOT_ALLOWED)

    def _later_fragment(self, fragment: FragmentKey, now: float) -> bool:
        expiry = self._fragments.get(fragment)
        if expiry is not None and expiry >= now:
            return True
        return self._drop(FilterDrop.FRAGMENT_NOT_MATCHED)

    def _live(self, key: FlowKey, now: float) -> bool:
        if now == self._newest_at and key == self._newest:
            return True
        flows = self._flows
        expiry = flows.get(key)
        if expiry is None or expiry < now:
            return False
        # A reply keeps its flow alive as the host's own packets do (renewed here: the flow exists, nothing to evict).
        flows[key] = now + (TCP_IDLE_S if key[0] == TCP else DATAGRAM_IDLE_S)
        flows.move_to_end(key)
        self._newest, self._newest_at = key, now
        return True

    def _remember(self, key: FlowKey, now: float) -> None:
        """Renew `key`'s expiry and make it the most recently used flow, evicting the oldest one past the bound."""
        if now == self._newest_at and key == self._newest:
            # Renewed at this very `now` and nothing used since: the write would change nothing. The data path
            # passes one `now` per batch, so a batch of one flow's packets (a bulk transfer) skips the table.
            return
        flows = self._flows
        flows[key] = now + (TCP_IDLE_S if key[0] == TCP else DATAGRAM_IDLE_S)
        flows.move_to_end(key)
        if len(flows) > self._max_flows:
            flows.popitem(last=False)
        self._newest, self._newest_at = key, now

    def _sweep(self, now: float) -> None:
        """Forget expired entries from the least recently used end (a long TCP idle limit may stop it early)."""
        self._next_sweep = now + _SWEEP_INTERVAL_S
        _sweep_table(self._flows, now)
        _sweep_table(self._fragments, now)

    def _note_refused(self, protocol: int, port: bytes) -> None:
        if (protocol, port) not in self._refused:
            self._refused.add((protocol, port))  # at most 2 x 65536 entries
            number = int.from_bytes(port, "big")
            self.newly_refused.append(str(number) if protocol == TCP else f"{number}/udp")

    def _drop(self, reason: FilterDrop) -> bool:
        self.drops[reason] += 1
        return False


def _sweep_table(table: OrderedDict[_Key, float], now: float) -> None:
    while table:
        key = next(iter(table))
        if table[key] >= now:
            return
        del table[key]


def bulk_flow_key(packet: bytes, reply: bool) -> FlowKey | None:  # noqa: PLR0911  # one None per way to lack a flow
    """The flow of the bulk of the traffic, the fast paths' kind of packet: TCP or UDP to a unicast address, in IPv4
    without options or fragmentation or in IPv6 without extension headers. A packet from the host, or with `reply` one
    from the VM (its flow named the host's way round; a SYN without ACK is no reply). None for anything else."""
    size = len(packet)
    if size < _FAST_PATH_MIN_SIZE:
        return None
    first = packet[0]
    if first == _IPV4_NO_OPTIONS:
        if packet[16] >= _IPV4_MULTICAST_FIRST_OCTET or packet[6] & 0x3F or packet[7]:
            return None
        protocol, transport = packet[9], 20
        source, destination = packet[12:16], packet[16:20]
    elif first >> 4 == 6 and size >= _FAST_PATH_MIN_SIZE_IPV6 and packet[24] != _IPV6_MULTICAST_FIRST_OCTET:
        protocol, transport = packet[6], 40
        source, destination = packet[8:24], packet[24:40]
    else:
        return None
    if protocol == TCP:
        if reply and packet[transport + 13] & (_TCP_SYN | _TCP_ACK) == _TCP_SYN:
            return None
    elif protocol != UDP:
        return None
    if reply:
        return (protocol, destination, source, packet[transport + 2 : transport + 4], packet[transport : transport + 2])
    return (protocol, source, destination, packet[transport : transport + 2], packet[transport + 2 : transport + 4])


def outbound_flow_key(packet: bytes, start: int) -> FlowKey | None:  # noqa: PLR0911  # one None per way to lack a flow
    """The flow of a packet the host sends (or one an ICMP error quotes, from `start`; quotes may be truncated after
    8 octets of the upper layer): TCP/UDP by ports, ICMP echo requests by identifier; None for anything else."""
    size = len(packet)
    if size < start + 20:
        return None
    version = packet[start] >> 4
    if version == 4:
        header = start + (packet[start] & 0x0F) * 4
        if packet[start + 6] & 0x1F or packet[start + 7]:  # a later fragment: no upper-layer header
            return None
        protocol = packet[start + 9]
        source, destination = packet[start + 12 : start + 16], packet[start + 16 : start + 20]
    elif version == 6:
        upper = _ipv6_upper_layer(packet, start)
        if upper is None or upper[3]:
            return None
        protocol, header = upper[0], upper[1]
        source, destination = packet[start + 8 : start + 24], packet[start + 24 : start + 40]
    else:
        return None
    if size < header + 4:
        return None
    if protocol in (TCP, UDP):
        return (protocol, source, destination, packet[header : header + 2], packet[header + 2 : header + 4])
    if size >= header + 6 and (
        (protocol == ICMP and version == 4 and packet[header] == _ICMP_ECHO_REQUEST)
        or (protocol == ICMPV6 and version == 6 and packet[header] == _ICMPV6_ECHO_REQUEST)
    ):
        return (protocol, source, destination, packet[header + 4 : header + 6], b"")
    return None


def _ipv6_upper_layer(packet: bytes, start: int) -> tuple[int, int, bytes | None, bool] | None:
    """Walk the extension headers of the IPv6 packet at `start` (RFC 8200 section 4): (upper-layer protocol, its
    offset, the fragment identification if a fragment header was seen, whether this is a later fragment); None when
    the chain runs past the packet or is implausibly long."""
    size = len(packet)
    if size < start + 40:
        return None
    protocol, offset = packet[start + 6], start + 40
    fragment_id: bytes | None = None
    for _ in range(_MAX_EXTENSION_HEADERS):
        if protocol in _LENGTH_IN_8_OCTETS:
            if size < offset + 2:
                return None
            protocol, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        elif protocol == _FRAGMENT:
            if size < offset + 8:
                return None
            fragment_id = packet[offset + 4 : offset + 8]
            if packet[offset + 2] or packet[offset + 3] & 0xF8:  # fragment offset != 0
                return packet[offset], offset + 8, fragment_id, True
            protocol, offset = packet[offset], offset + 8
        else:
            return protocol, offset, fragment_id, False
    return None
