"""The flow filter: replies of host flows pass, everything the VM starts on its own is dropped by reason."""

from __future__ import annotations

import pytest

from dmnc.tunnel.flowfilter import (
    DATAGRAM_IDLE_S,
    FRAGMENT_WINDOW_S,
    TCP_IDLE_S,
    FilterDrop,
    FlowFilter,
    InboundPort,
)
from tests.unit.tunnel.packets import (
    ACK,
    CONTAINER4,
    CONTAINER6,
    HOST4,
    HOST6,
    PSH,
    SYN,
    VM4,
    VM6,
    icmp,
    icmp_error,
    ip,
    packed,
    tcp,
    udp,
)

FAMILIES = [(HOST4, CONTAINER4), (HOST6, CONTAINER6)]


def make_filter(**kwargs: object) -> FlowFilter:
    return FlowFilter([packed(HOST4), packed(HOST6)], **kwargs)  # type: ignore[arg-type]


def only_drop(flow_filter: FlowFilter) -> FilterDrop:
    [(reason, count)] = flow_filter.drops.items()
    assert count == 1
    return reason


@pytest.mark.parametrize(("host", "container"), FAMILIES)
def test_tcp_replies_of_a_host_connection_pass(host: str, container: str) -> None:
    flows = make_filter()
    assert flows.outbound(tcp(host, 40000, container, 80, SYN), 0.0)
    assert flows.inbound(tcp(container, 80, host, 40000, SYN | ACK), 0.1)
    assert flows.inbound(tcp(container, 80, host, 40000, PSH | ACK), TCP_IDLE_S - 1)
    assert not flows.drops


@pytest.mark.parametrize(("host", "container"), FAMILIES)
def test_a_connection_from_the_vm_is_dropped_and_its_port_reported_once(host: str, container: str) -> None:
    flows = make_filter()
    assert not flows.inbound(tcp(container, 50000, host, 8088, SYN), 0.0)
    assert not flows.inbound(tcp(container, 50001, host, 8088, SYN), 0.0)
    assert flows.drops == {FilterDrop.INBOUND_NOT_ALLOWED: 2}
    assert flows.newly_refused == ["8088"]


@pytest.mark.parametrize(("host", "container"), FAMILIES)
@pytest.mark.parametrize("now", [0.0, 0.1])  # at the same `now` the newest-flow shortcut would answer
def test_a_syn_without_ack_is_dropped_even_on_a_host_flow(host: str, container: str, now: float) -> None:
    flows = make_filter()
    flows.outbound(tcp(host, 40000, container, 80, SYN), 0.0)
    assert not flows.inbound(tcp(container, 80, host, 40000, SYN), now)
    assert only_drop(flows) is FilterDrop.INBOUND_NOT_ALLOWED


def test_a_stray_ack_without_a_flow_is_dropped_but_not_reported_as_a_connection() -> None:
    flows = make_filter()
    assert not flows.inbound(tcp(CONTAINER4, 80, HOST4, 40000, ACK), 0.0)
    assert only_drop(flows) is FilterDrop.INBOUND_NOT_ALLOWED
    assert flows.newly_refused == []


def test_tcp_flows_expire_after_their_idle_limit() -> None:
    flows = make_filter()
    flows.outbound(tcp(HOST4, 40000, CONTAINER4, 80), 0.0)
    assert not flows.inbound(tcp(CONTAINER4, 80, HOST4, 40000), TCP_IDLE_S + 1)


def test_replies_keep_a_flow_alive() -> None:
    flows = make_filter()
    flows.outbound(udp(HOST4, 5000, CONTAINER4, 53), 0.0)
    for step in range(1, 5):
        assert flows.inbound(udp(CONTAINER4, 53, HOST4, 5000), step * (DATAGRAM_IDLE_S - 1))


@pytest.mark.parametrize(("host", "container"), FAMILIES)
def test_udp_replies_pass_only_to_the_recent_five_tuple(host: str, container: str) -> None:
    flows = make_filter()
    flows.outbound(udp(host, 5000, container, 53), 0.0)
    assert flows.inbound(udp(container, 53, host, 5000), 1.0)
    assert not flows.inbound(udp(container, 54, host, 5000), 1.0)  # another remote port
    assert not flows.inbound(udp(container, 53, host, 5001), 1.0)  # another host port
    assert not flows.inbound(udp(container, 53, host, 5000), DATAGRAM_IDLE_S + 2)
    assert flows.drops == {FilterDrop.INBOUND_NOT_ALLOWED: 3}
    assert flows.newly_refused == ["5000/udp", "5001/udp"]


@pytest.mark.parametrize(("host", "container"), FAMILIES)
def test_allowed_inbound_ports_admit_new_flows(host: str, container: str) -> None:
    flows = make_filter(allowed_inbound=[InboundPort(8088), InboundPort(5353, "udp")])
    assert flows.inbound(tcp(container, 50000, host, 8088, SYN), 0.0)
    assert flows.inbound(udp(container, 50000, host, 5353), 0.0)
    assert not flows.inbound(udp(container, 50000, host, 8088), 0.0)  # 8088 is allowed for TCP only
    assert not flows.inbound(tcp(container, 50000, host, 5353, SYN), 0.0)
    flows.set_allowed_inbound([])
    assert not flows.inbound(tcp(container, 50001, host, 8088, SYN), 0.0)


@pytest.mark.parametrize(
    ("host", "container", "request_type", "reply_type"), [(*FAMILIES[0], 8, 0), (*FAMILIES[1], 128, 129)]
)
def test_echo_replies_pass_echo_requests_from_the_vm_do_not(
    host: str, container: str, request_type: int, reply_type: int
) -> None:
    flows = make_filter()
    assert not flows.inbound(icmp(container, host, request_type, ident=9), 0.0)
    flows.outbound(icmp(host, container, request_type, ident=9), 0.0)
    assert flows.inbound(icmp(container, host, reply_type, ident=9), 0.5)
    assert not flows.inbound(icmp(container, host, reply_type, ident=10), 0.5)
    assert flows.drops == {FilterDrop.INBOUND_NOT_ALLOWED: 2}


@pytest.mark.parametrize(("host", "container", "unreachable"), [(*FAMILIES[0], 3), (*FAMILIES[1], 1)])
def test_icmp_errors_pass_only_when_they_quote_a_host_flow(host: str, container: str, unreachable: int) -> None:
    flows = make_filter()
    sent = udp(host, 5000, container, 9999)
    vm = VM4 if ":" not in host else VM6
    assert not flows.inbound(icmp_error(vm, host, unreachable, sent), 0.0)
    flows.outbound(sent, 0.0)
    assert flows.inbound(icmp_error(vm, host, unreachable, sent), 0.1)
    assert not flows.inbound(icmp_error(vm, host, unreachable, udp(host, 5001, container, 9999)), 0.1)
    # An error quoting a packet that was not the host's (its source is another address) is not a host flow's.
    assert not flows.inbound(icmp_error(vm, host, unreachable, udp(container, 9999, host, 5000)), 0.1)


def test_an_icmp_error_quoting_a_ping_passes() -> None:
    flows = make_filter()
    ping = icmp(HOST4, CONTAINER4, 8, ident=3)
    flows.outbound(ping, 0.0)
    assert flows.inbound(icmp_error(VM4, HOST4, 11, ping), 0.1)


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (icmp(VM6, HOST6, 134), FilterDrop.ROUTER_MESSAGE),  # a Router Advertisement, unicast
        (icmp(VM6, "ff02::1", 134), FilterDrop.MULTICAST_OR_BROADCAST),
        *[(icmp(VM6, HOST6, kind), FilterDrop.ROUTER_MESSAGE) for kind in (133, 135, 136, 137)],
        (icmp(VM4, HOST4, 5), FilterDrop.ROUTER_MESSAGE),  # ICMP redirect
        (icmp(VM4, HOST4, 9), FilterDrop.ROUTER_MESSAGE),  # ICMP router advertisement
        (udp(CONTAINER4, 68, "255.255.255.255", 67), FilterDrop.MULTICAST_OR_BROADCAST),
        (udp(CONTAINER4, 5353, "224.0.0.251", 5353), FilterDrop.MULTICAST_OR_BROADCAST),
        (tcp(CONTAINER4, 80, "192.168.1.10", 40000), FilterDrop.NOT_TO_HOST_ADDRESS),
        (tcp(CONTAINER4, 80, VM4, 40000), FilterDrop.NOT_TO_HOST_ADDRESS),
        (tcp(CONTAINER6, 80, "fd33:33:33::9", 40000), FilterDrop.NOT_TO_HOST_ADDRESS),
        (ip(CONTAINER4, HOST4, 47, b"gre-payload"), FilterDrop.PROTOCOL_NOT_ALLOWED),
        (ip(CONTAINER6, HOST6, 50, b"esp-payload"), FilterDrop.PROTOCOL_NOT_ALLOWED),
        (ip(CONTAINER4, HOST4, 58, b"icmpv6-in-v4"), FilterDrop.PROTOCOL_NOT_ALLOWED),
        (b"", FilterDrop.UNPARSABLE_PACKET),
        (b"\x45" + bytes(18), FilterDrop.UNPARSABLE_PACKET),
        (ip(CONTAINER4, HOST4, 6, b"\x00\x50"), FilterDrop.UNPARSABLE_PACKET),  # a TCP header cut short
        (b"\x4f" + tcp(CONTAINER4, 80, HOST4, 40000)[1:], FilterDrop.UNPARSABLE_PACKET),  # IHL past the end
        (b"\x75" + bytes(39), FilterDrop.UNPARSABLE_PACKET),  # IP version 7
        (ip(CONTAINER6, HOST6, 0, b""), FilterDrop.UNPARSABLE_PACKET),  # a hop-by-hop header cut short
    ],
)
def test_drops_by_reason(packet: bytes, reason: FilterDrop) -> None:
    flows = make_filter()
    assert not flows.inbound(packet, 0.0)
    assert only_drop(flows) is reason


def test_extension_headers_are_walked_to_the_upper_layer() -> None:
    flows = make_filter()
    flows.outbound(udp(HOST6, 5000, CONTAINER6, 53), 0.0)
    reply = udp(CONTAINER6, 53, HOST6, 5000)
    # Insert an 8-octet destination options header (next header UDP) before the UDP header.
    with_options = bytearray(reply[:40]) + bytes([17, 0, 1, 4, 0, 0, 0, 0]) + reply[40:]
    with_options[6] = 60
    with_options[4:6] = (len(with_options) - 40).to_bytes(2, "big")
    assert flows.inbound(bytes(with_options), 0.1)


def test_a_long_extension_header_chain_is_unparsable() -> None:
    chain = b"".join(bytes([60, 0, 1, 4, 0, 0, 0, 0]) for _ in range(20))
    packet = bytearray(ip(CONTAINER6, HOST6, 60, chain + udp(CONTAINER6, 53, HOST6, 5000)[40:]))
    flows = make_filter()
    assert not flows.inbound(bytes(packet), 0.0)
    assert only_drop(flows) is FilterDrop.UNPARSABLE_PACKET


@pytest.mark.parametrize(("host", "container", "more"), [(*FAMILIES[0], 0x2000), (*FAMILIES[1], 1)])
def test_fragments_of_a_reply_pass_within_the_window(host: str, container: str, more: int) -> None:
    flows = make_filter()
    flows.outbound(udp(host, 5000, container, 53), 0.0)
    first = udp(container, 53, host, 5000, b"a" * 64, ident=77, frag=more)
    later_offset = 9 if ":" not in host else 9 << 3  # 72 octets in: 9 units of 8
    later = ip(container, host, 17, b"b" * 64, ident=77, frag=later_offset)
    stray = ip(container, host, 17, b"b" * 64, ident=78, frag=later_offset)
    assert not flows.inbound(later, 0.0)  # no first fragment yet
    assert flows.inbound(first, 0.1)
    assert flows.inbound(later, 0.2)
    assert not flows.inbound(stray, 0.2)
    assert not flows.inbound(later, 0.1 + FRAGMENT_WINDOW_S + 1)
    assert flows.drops == {FilterDrop.FRAGMENT_NOT_MATCHED: 3}


def test_fragments_of_a_refused_first_fragment_stay_out() -> None:
    flows = make_filter()
    first = udp(CONTAINER4, 53, HOST4, 5000, b"a" * 64, ident=5, frag=0x2000)
    assert not flows.inbound(first, 0.0)
    assert not flows.inbound(ip(CONTAINER4, HOST4, 17, b"b" * 64, ident=5, frag=9), 0.0)
    assert flows.drops == {FilterDrop.INBOUND_NOT_ALLOWED: 1, FilterDrop.FRAGMENT_NOT_MATCHED: 1}


@pytest.mark.parametrize(
    "packet",
    [
        udp(HOST4, 5353, "224.0.0.251", 5353),
        icmp("::", "ff02::16", 143),  # MLDv2 report from the unspecified address
        icmp("fe80::1", "ff02::2", 133),  # router solicitation
    ],
)
def test_host_multicast_never_leaves(packet: bytes) -> None:
    flows = make_filter()
    assert not flows.outbound(packet, 0.0)
    assert only_drop(flows) is FilterDrop.OUTBOUND_MULTICAST


def test_the_table_is_bounded_and_the_least_recently_used_flow_goes_first() -> None:
    flows = make_filter(max_flows=3)
    for port in (1, 2, 3):
        flows.outbound(udp(HOST4, port, CONTAINER4, 53), 0.0)
    assert flows.inbound(udp(CONTAINER4, 53, HOST4, 1), 0.0)  # port 1 used again: port 2 is now the oldest
    flows.outbound(udp(HOST4, 4, CONTAINER4, 53), 0.0)
    assert flows.flow_count == 3
    assert not flows.inbound(udp(CONTAINER4, 53, HOST4, 2), 0.0)
    assert all(flows.inbound(udp(CONTAINER4, 53, HOST4, port), 0.0) for port in (1, 3, 4))


def test_repeated_packets_at_one_time_keep_the_eviction_order() -> None:
    # The data path judges a batch at one `now`; a flow's second packet in a row skips the table, which must not
    # change which flow is evicted or keep an evicted one alive.
    flows = make_filter(max_flows=2)
    for port in (1, 2, 1, 1):
        flows.outbound(udp(HOST4, port, CONTAINER4, 53), 0.0)
    flows.outbound(udp(HOST4, 3, CONTAINER4, 53), 0.0)  # port 2 is the least recently used
    assert not flows.inbound(udp(CONTAINER4, 53, HOST4, 2), 0.0)
    assert flows.inbound(udp(CONTAINER4, 53, HOST4, 1), 0.0)
    assert flows.inbound(udp(CONTAINER4, 53, HOST4, 3), 0.0)
    single = make_filter(max_flows=1)
    single.outbound(udp(HOST4, 1, CONTAINER4, 53), 0.0)
    single.outbound(udp(HOST4, 2, CONTAINER4, 53), 0.0)
    assert not single.inbound(udp(CONTAINER4, 53, HOST4, 1), 0.0)
    assert single.inbound(udp(CONTAINER4, 53, HOST4, 2), 0.0)


def test_expired_flows_are_swept() -> None:
    flows = make_filter()
    for port in range(10):
        flows.outbound(udp(HOST4, port, CONTAINER4, 53), 0.0)
    flows.outbound(udp(HOST4, 99, CONTAINER4, 53), DATAGRAM_IDLE_S + 1)
    assert flows.flow_count == 1


def test_inbound_port_names() -> None:
    assert str(InboundPort(8088)) == "8088"
    assert str(InboundPort(53, "udp")) == "53/udp"
