"""rtnetlink route and link messages: kernel captures, round trips, and malformed payloads that must never raise.

The framing they ride on (headers, attributes, acknowledgements) is tested in tests/unit/test_netlink.py.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc import netlink
from dmnc.routes import rtnetlink

# Property tests take no time limit: a loaded CI machine must not fail them (speed lives in tests/bench).
untimed = settings(deadline=None)

# Captured from this lab's kernel (6.x) answering an RTM_GETROUTE dump, seq 77, port 13848:
# `10.9.0.0/16 via 172.20.5.7 dev <3> metric 7` (proto boot) and `fd00:5::/64 dev <3> proto 220`.
KERNEL_IPV4_GATEWAY_ROUTE = bytes.fromhex(
    "44000000180002004d0000001836000002100000fe0300010000000008000f00fe000000080001000a090000"
    "080006000700000008000500ac1405070800040003000000"
)
KERNEL_IPV6_DMNC_ROUTE = bytes.fromhex(
    "74000000180002004d000000183600000a400000fedc00010000000008000f00fe00000014000100fd000005"
    "0000000000000000000000000800060000040000080004000300000024000c00000000000000000000000000"
    "00000000000000000000000000000000000000000500140000000000"
)
KERNEL_DONE = bytes.fromhex("14000000030002004d0000001836000000000000")


def test_kernel_ipv4_route_with_gateway_decodes_every_field() -> None:
    [message] = rtnetlink.decode_messages_untrusted(KERNEL_IPV4_GATEWAY_ROUTE)
    assert message == rtnetlink.RouteMessage(
        kind=rtnetlink.RouteMessageKind.NEW,
        family=netlink.AF_INET,
        destination=ipaddress.ip_network("10.9.0.0/16"),
        flags=netlink.NLM_F_MULTI,
        seq=77,
        port_id=13848,
        table=rtnetlink.RT_TABLE_MAIN,
        protocol=3,
        scope=netlink.RT_SCOPE_UNIVERSE,
        route_type=rtnetlink.RTN_UNICAST,
        output_interface=3,
        gateway=ipaddress.ip_address("172.20.5.7"),
        priority=7,
    )


def test_kernel_dump_datagram_with_ipv6_route_and_done_decodes_in_order() -> None:
    messages = rtnetlink.decode_messages_untrusted(KERNEL_IPV6_DMNC_ROUTE + KERNEL_DONE)
    route, done = messages
    assert isinstance(route, rtnetlink.RouteMessage)
    assert route.destination == ipaddress.ip_network("fd00:5::/64")
    assert route.protocol == rtnetlink.RTPROT_DMNC
    assert route.output_interface == 3
    assert route.priority == 1024  # the kernel's default IPv6 metric (IP6_RT_PRIO_USER)
    assert done == netlink.DoneMessage(seq=77, port_id=13848, flags=netlink.NLM_F_MULTI)


def test_route_request_layout_matches_rtnetlink_h() -> None:
    message = rtnetlink.RouteMessage(
        kind=rtnetlink.RouteMessageKind.NEW,
        family=netlink.AF_INET,
        destination=ipaddress.ip_network("172.20.0.0/16"),
        flags=netlink.NLM_F_REQUEST | netlink.NLM_F_ACK | netlink.NLM_F_CREATE | netlink.NLM_F_EXCL,
        seq=5,
        protocol=rtnetlink.RTPROT_DMNC,
        scope=rtnetlink.RT_SCOPE_LINK,
        output_interface=9,
    )
    data = rtnetlink.encode_route_message(message)
    assert struct.unpack_from("=IHHII", data) == (len(data), 24, 0x605, 5, 0)
    # rtmsg: AF_INET, /16, src 0, tos 0, table main, protocol 220, scope link, unicast, flags 0
    assert data[16:28] == bytes([2, 16, 0, 0, 254, 220, 253, 1, 0, 0, 0, 0])
    assert data[28:] == (
        struct.pack("=HHI", 8, rtnetlink.RTA_TABLE, 254)
        + struct.pack("=HH", 8, rtnetlink.RTA_DST)
        + bytes([172, 20, 0, 0])
        + struct.pack("=HHI", 8, rtnetlink.RTA_OIF, 9)
    )


def test_dump_request_is_getroute_with_dump_flags() -> None:
    data = rtnetlink.encode_dump_request(seq=3)
    assert struct.unpack_from("=IHHII", data) == (28, rtnetlink.RTM_GETROUTE, 0x301, 3, 0)
    assert len(data) == 16 + 12


def test_encode_rejects_destination_of_other_family() -> None:
    message = rtnetlink.RouteMessage(
        kind=rtnetlink.RouteMessageKind.NEW, family=netlink.AF_INET6, destination=ipaddress.ip_network("10.0.0.0/8")
    )
    with pytest.raises(ValueError, match="does not match"):
        rtnetlink.encode_route_message(message)


ipv4_networks = st.builds(
    lambda address, prefix: ipaddress.IPv4Network((address, prefix), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
ipv6_networks = st.builds(
    lambda address, prefix: ipaddress.IPv6Network((address, prefix), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
u32 = st.integers(0, 2**32 - 1)


@st.composite
def route_messages(draw: st.DrawFn) -> rtnetlink.RouteMessage:
    destination = draw(st.one_of(ipv4_networks, ipv6_networks))
    family = netlink.AF_INET if destination.version == 4 else netlink.AF_INET6
    kind = draw(st.sampled_from(rtnetlink.RouteMessageKind))
    gateway_bits = 32 if family == netlink.AF_INET else 128
    gateway = draw(st.none() | st.integers(0, 2**gateway_bits - 1).map(ipaddress.ip_address))
    if gateway is not None and gateway.version != destination.version:
        gateway = None
    return rtnetlink.RouteMessage(
        kind=kind,
        family=family,
        destination=destination,
        flags=draw(st.integers(0, 0xFFFF)),
        seq=draw(u32),
        port_id=draw(u32),
        table=draw(u32),
        protocol=draw(st.integers(0, 255)),
        scope=draw(st.integers(0, 255)),
        route_type=draw(st.integers(0, 255)),
        route_flags=draw(u32),
        output_interface=draw(st.none() | u32),
        gateway=gateway,
        priority=draw(st.none() | u32),
    )


@untimed
@given(st.lists(route_messages(), min_size=1, max_size=5))
def test_route_messages_round_trip(messages: list[rtnetlink.RouteMessage]) -> None:
    data = b"".join(rtnetlink.encode_route_message(message) for message in messages)
    assert rtnetlink.decode_messages_untrusted(data) == messages


@untimed
@given(route_messages(), st.data())
def test_corrupted_route_messages_never_raise(message: rtnetlink.RouteMessage, data: st.DataObject) -> None:
    encoded = bytearray(rtnetlink.encode_route_message(message))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    rtnetlink.decode_messages_untrusted(bytes(encoded[:cut]))


def _route_datagram(rtmsg: bytes, attributes: bytes, message_type: int = rtnetlink.RTM_NEWROUTE) -> bytes:
    payload = rtmsg + attributes
    return struct.pack("=IHHII", 16 + len(payload), message_type, 0, 1, 0) + payload


# Route payloads the kernel would never send (framing errors are tests/unit/test_netlink.py's).
MALFORMED = {
    "rtmsg truncated": _route_datagram(b"\x02\x18\x00", b""),
    "attribute overruns message": _route_datagram(
        bytes([2, 24, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), struct.pack("=HH", 40, rtnetlink.RTA_DST) + b"\x0a\x00"
    ),
    "attribute length below header": _route_datagram(
        bytes([2, 24, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), struct.pack("=HH", 2, rtnetlink.RTA_DST)
    ),
    "unknown family": _route_datagram(bytes([7, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), b""),
    "prefix longer than address": _route_datagram(bytes([2, 33, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), b""),
    "ipv4 destination of 3 bytes": _route_datagram(
        bytes([2, 24, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), struct.pack("=HH", 7, rtnetlink.RTA_DST) + b"\x0a\x00\x00\x00"
    ),
    "host bits set": _route_datagram(
        bytes([2, 8, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), struct.pack("=HH", 8, rtnetlink.RTA_DST) + b"\x0a\x00\x00\x01"
    ),
    "prefix without destination": _route_datagram(bytes([2, 8, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), b""),
    "oif of 2 bytes": _route_datagram(
        bytes([2, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), struct.pack("=HHH", 6, rtnetlink.RTA_OIF, 1) + b"\0\0"
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_kernel_message_is_dropped_counted_and_logged(name: str, caplog: pytest.LogCaptureFixture) -> None:
    drops: Counter[str] = Counter()
    with caplog.at_level(logging.WARNING, logger="dmnc.netlink"):
        assert rtnetlink.decode_messages_untrusted(MALFORMED[name], drops) == []
    assert len(caplog.records) == 1
    assert caplog.records[0].message.startswith("netlink: dropped")
    assert drops == {"malformed": 1}


def test_a_malformed_message_does_not_hide_the_valid_ones_around_it(caplog: pytest.LogCaptureFixture) -> None:
    data = KERNEL_DONE + MALFORMED["unknown family"] + KERNEL_IPV4_GATEWAY_ROUTE
    with caplog.at_level(logging.WARNING, logger="dmnc.netlink"):
        messages = rtnetlink.decode_messages_untrusted(data)
    assert [type(message) for message in messages] == [netlink.DoneMessage, rtnetlink.RouteMessage]
    assert len(caplog.records) == 1


def test_default_route_without_destination_attribute_is_slash_zero() -> None:
    data = _route_datagram(bytes([10, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), b"")
    [message] = rtnetlink.decode_messages_untrusted(data)
    assert isinstance(message, rtnetlink.RouteMessage)
    assert message.destination == ipaddress.ip_network("::/0")


def test_noop_and_unknown_types_are_skipped_silently(caplog: pytest.LogCaptureFixture) -> None:
    data = struct.pack("=IHHII", 16, netlink.NLMSG_NOOP, 0, 1, 0) + struct.pack(
        "=IHHII", 16, 28, 0, 1, 0
    )  # 28: RTM_NEWNEIGH (RTM_NEWADDR is decoded now, for the host's addresses)
    with caplog.at_level(logging.WARNING):
        assert rtnetlink.decode_messages_untrusted(data) == []
    assert not caplog.records


@untimed
@given(st.booleans(), st.integers(-(2**31), 2**31 - 1), u32, u32, u32)
def test_link_messages_round_trip(deleted: bool, index: int, flags: int, seq: int, port_id: int) -> None:
    message = rtnetlink.LinkMessage(deleted, index, flags, seq, port_id)
    assert rtnetlink.decode_messages_untrusted(rtnetlink.encode_link_message(message)) == [message]


def test_truncated_link_message_is_dropped_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    data = struct.pack("=IHHII", 24, netlink.RTM_NEWLINK, 0, 1, 0) + bytes(8)
    with caplog.at_level(logging.WARNING, logger="dmnc.netlink"):
        assert rtnetlink.decode_messages_untrusted(data) == []
    assert "ifinfomsg" in caplog.records[0].message


# Captured from this lab's kernel (6.x) in a fresh namespace with `ip addr add 10.78.0.1 peer 10.78.0.2/32 dev
# vcap1` (index 2), `ip addr add 10.77.0.1/24 dev vcap0` (index 3) and lo: the RTM_GETADDR dump, seq 5.
KERNEL_ADDRESS_DUMP = bytes.fromhex(
    "4c000000140002000500000009220000020880fe01000000080001007f000001080002007f000001070003006c6f0000"
    "080008008000000014000600ffffffffffffffff4919050049190500500000001400020005000000092200000220800002"
    "000000080001000a4e0002080002000a4e00010a0003007663617031000000080008008000000014000600ffffffffffff"
    "ffff4a1905004a190500500000001400020005000000092200000218800003000000080001000a4d0001080002000a4d00"
    "010a0003007663617030000000080008008000000014000600ffffffffffffffff4a1905004a1905005000000014000200"
    "05000000092200000a8080fe01000000140001000000000000000000000000000000000114000600ffffffffffffffff49"
    "19050049190500080008008000000005000b00010000001400000003000200050000000922000000000000"
)
# The same namespace's IPv4 rule dump (seq 6) after `ip rule add pref 5270 table 52`.
KERNEL_RULE_DUMP = bytes.fromhex(
    "3400000020000200060000000922000002000000ff0000010000000008000f00ff00000008000e00ffffffff0500150002"
    "0000003c00000020000200060000000922000002000000340000010000000008000f003400000008000e00ffffffff0500"
    "15000000000008000600961400003c00000020000200060000000922000002000000fe0000010000000008000f00fe0000"
    "0008000e00ffffffff050015000200000008000600fe7f00003c00000020000200060000000922000002000000fd000001"
    "0000000008000f00fd00000008000e00ffffffff050015000200000008000600ff7f00001400000003000200060000000922"
    "000000000000"
)
# Its answer to `encode_lookup_request(10.77.0.9, seq 7)`: the connected route 10.77.0.0/24 of table main.
KERNEL_LOOKUP_ANSWER = bytes.fromhex(
    "3c00000018000000070000000922000002180000fe02fd011000000008000f00fe000000080001000a4d0000080007000a4d"
    "00010800040003000000"
)


def test_kernel_address_dump_decodes_plain_and_point_to_point_addresses() -> None:
    messages = rtnetlink.decode_messages_untrusted(KERNEL_ADDRESS_DUMP)
    addresses = [m for m in messages if isinstance(m, rtnetlink.AddressMessage)]
    ip = ipaddress.ip_address
    assert [(m.interface_index, m.local, m.address, m.prefix_length) for m in addresses] == [
        (1, ip("127.0.0.1"), ip("127.0.0.1"), 8),
        (2, ip("10.78.0.1"), ip("10.78.0.2"), 32),
        (3, ip("10.77.0.1"), ip("10.77.0.1"), 24),
        (1, ip("::1"), ip("::1"), 128),
    ]
    assert isinstance(messages[-1], netlink.DoneMessage)


def test_kernel_rule_dump_gives_priority_and_table() -> None:
    rules = [m for m in rtnetlink.decode_messages_untrusted(KERNEL_RULE_DUMP) if isinstance(m, rtnetlink.RuleMessage)]
    assert [(rule.priority, rule.table, rule.action) for rule in rules] == [
        (0, 255, rtnetlink.FR_ACT_TO_TBL),
        (5270, 52, rtnetlink.FR_ACT_TO_TBL),
        (32766, rtnetlink.RT_TABLE_MAIN, rtnetlink.FR_ACT_TO_TBL),
        (32767, 253, rtnetlink.FR_ACT_TO_TBL),
    ]


def test_kernel_lookup_answer_names_the_matched_route_and_its_table() -> None:
    [answer] = rtnetlink.decode_messages_untrusted(KERNEL_LOOKUP_ANSWER)
    assert isinstance(answer, rtnetlink.RouteMessage)
    assert (answer.destination, answer.table, answer.output_interface) == (
        ipaddress.ip_network("10.77.0.0/24"),
        rtnetlink.RT_TABLE_MAIN,
        3,
    )


def test_lookup_request_asks_for_the_table_and_the_fib_match() -> None:
    data = rtnetlink.encode_lookup_request(ipaddress.ip_address("fd77:5::1"), 9)
    length, message_type, flags, seq, _port = struct.unpack_from("=IHHII", data)
    family, dst_len, *_rest, route_flags = rtnetlink.RTMSG.unpack_from(data, 16)
    assert (length, message_type, flags, seq) == (len(data), rtnetlink.RTM_GETROUTE, netlink.NLM_F_REQUEST, 9)
    assert (family, dst_len) == (netlink.AF_INET6, 128)
    assert route_flags == rtnetlink.RTM_F_LOOKUP_TABLE | rtnetlink.RTM_F_FIB_MATCH


address_messages = st.builds(
    lambda deleted, index, pair, prefix, seq: rtnetlink.AddressMessage(
        deleted,
        netlink.AF_INET if pair[0].version == 4 else netlink.AF_INET6,
        prefix % (pair[0].max_prefixlen + 1),
        index,
        pair[0],
        pair[1],
        seq,
        0,
    ),
    st.booleans(),
    u32,
    st.one_of(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(
            lambda p: (ipaddress.IPv4Address(p[0]), ipaddress.IPv4Address(p[1]))
        ),
        st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 2**128 - 1)).map(
            lambda p: (ipaddress.IPv6Address(p[0]), ipaddress.IPv6Address(p[1]))
        ),
    ),
    st.integers(0, 128),
    u32,
)
rule_messages = st.builds(
    rtnetlink.RuleMessage, st.sampled_from([netlink.AF_INET, netlink.AF_INET6]), u32, u32, st.integers(0, 255), u32
)


@untimed
@given(st.lists(address_messages | rule_messages, min_size=1, max_size=5))
def test_address_and_rule_messages_round_trip(messages: list[rtnetlink.AddressMessage | rtnetlink.RuleMessage]) -> None:
    data = b"".join(
        rtnetlink.encode_address_message(m)
        if isinstance(m, rtnetlink.AddressMessage)
        else rtnetlink.encode_rule_message(m)
        for m in messages
    )
    assert rtnetlink.decode_messages_untrusted(data) == messages


@untimed
@given(address_messages | rule_messages, st.data())
def test_corrupted_address_and_rule_messages_never_raise(
    message: rtnetlink.AddressMessage | rtnetlink.RuleMessage, data: st.DataObject
) -> None:
    if isinstance(message, rtnetlink.AddressMessage):
        encoded = bytearray(rtnetlink.encode_address_message(message))
    else:
        encoded = bytearray(rtnetlink.encode_rule_message(message))
    for _ in range(data.draw(st.integers(1, 4))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    rtnetlink.decode_messages_untrusted(bytes(encoded[: data.draw(st.integers(0, len(encoded)))]))
