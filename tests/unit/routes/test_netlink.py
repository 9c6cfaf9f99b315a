"""rtnetlink encoder/decoder: kernel captures, round trips, and malformed bytes that must never raise."""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.routes import netlink

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
    [message] = netlink.decode_messages_untrusted(KERNEL_IPV4_GATEWAY_ROUTE)
    assert message == netlink.RouteMessage(
        kind=netlink.RouteMessageKind.NEW,
        family=netlink.AF_INET,
        destination=ipaddress.ip_network("10.9.0.0/16"),
        flags=netlink.NLM_F_MULTI,
        seq=77,
        port_id=13848,
        table=netlink.RT_TABLE_MAIN,
        protocol=3,
        scope=netlink.RT_SCOPE_UNIVERSE,
        route_type=netlink.RTN_UNICAST,
        output_interface=3,
        gateway=ipaddress.ip_address("172.20.5.7"),
        priority=7,
    )


def test_kernel_dump_datagram_with_ipv6_route_and_done_decodes_in_order() -> None:
    messages = netlink.decode_messages_untrusted(KERNEL_IPV6_DMNC_ROUTE + KERNEL_DONE)
    route, done = messages
    assert isinstance(route, netlink.RouteMessage)
    assert route.destination == ipaddress.ip_network("fd00:5::/64")
    assert route.protocol == netlink.RTPROT_DMNC
    assert route.output_interface == 3
    assert route.priority == 1024  # the kernel's default IPv6 metric (IP6_RT_PRIO_USER)
    assert done == netlink.DoneMessage(seq=77, port_id=13848, flags=netlink.NLM_F_MULTI)


def test_route_request_layout_matches_rtnetlink_h() -> None:
    message = netlink.RouteMessage(
        kind=netlink.RouteMessageKind.NEW,
        family=netlink.AF_INET,
        destination=ipaddress.ip_network("172.20.0.0/16"),
        flags=netlink.NLM_F_REQUEST | netlink.NLM_F_ACK | netlink.NLM_F_CREATE | netlink.NLM_F_EXCL,
        seq=5,
        protocol=netlink.RTPROT_DMNC,
        scope=netlink.RT_SCOPE_LINK,
        output_interface=9,
    )
    data = netlink.encode_route_message(message)
    assert struct.unpack_from("=IHHII", data) == (len(data), 24, 0x605, 5, 0)
    # rtmsg: AF_INET, /16, src 0, tos 0, table main, protocol 220, scope link, unicast, flags 0
    assert data[16:28] == bytes([2, 16, 0, 0, 254, 220, 253, 1, 0, 0, 0, 0])
    assert data[28:] == (
        struct.pack("=HHI", 8, netlink.RTA_TABLE, 254)
        + struct.pack("=HH", 8, netlink.RTA_DST)
        + bytes([172, 20, 0, 0])
        + struct.pack("=HHI", 8, netlink.RTA_OIF, 9)
    )


def test_dump_request_is_getroute_with_dump_flags() -> None:
    data = netlink.encode_dump_request(seq=3)
    assert struct.unpack_from("=IHHII", data) == (28, netlink.RTM_GETROUTE, 0x301, 3, 0)
    assert len(data) == 16 + 12


def test_group_mask_matches_rtmgrp_constants() -> None:
    # RTMGRP_IPV4_ROUTE 0x40 and RTMGRP_IPV6_ROUTE 0x400 in linux/rtnetlink.h
    assert netlink.group_mask(netlink.RTNLGRP_IPV4_ROUTE, netlink.RTNLGRP_IPV6_ROUTE) == 0x440


def test_ack_and_error_messages_decode() -> None:
    ack = netlink.ErrorMessage(seq=9, port_id=1, error=0)
    refused = netlink.ErrorMessage(seq=10, port_id=1, error=-17)
    data = netlink.encode_error_message(ack) + netlink.encode_error_message(refused)
    assert netlink.decode_messages_untrusted(data) == [ack, refused]


def test_encode_rejects_destination_of_other_family() -> None:
    message = netlink.RouteMessage(
        kind=netlink.RouteMessageKind.NEW, family=netlink.AF_INET6, destination=ipaddress.ip_network("10.0.0.0/8")
    )
    with pytest.raises(ValueError, match="does not match"):
        netlink.encode_route_message(message)


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
def route_messages(draw: st.DrawFn) -> netlink.RouteMessage:
    destination = draw(st.one_of(ipv4_networks, ipv6_networks))
    family = netlink.AF_INET if destination.version == 4 else netlink.AF_INET6
    kind = draw(st.sampled_from(netlink.RouteMessageKind))
    gateway_bits = 32 if family == netlink.AF_INET else 128
    gateway = draw(st.none() | st.integers(0, 2**gateway_bits - 1).map(ipaddress.ip_address))
    if gateway is not None and gateway.version != destination.version:
        gateway = None
    return netlink.RouteMessage(
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
def test_route_messages_round_trip(messages: list[netlink.RouteMessage]) -> None:
    data = b"".join(netlink.encode_route_message(message) for message in messages)
    assert netlink.decode_messages_untrusted(data) == messages


@untimed
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for message in netlink.decode_messages_untrusted(data):
        assert isinstance(message, netlink.NetlinkMessage)


@untimed
@given(route_messages(), st.data())
def test_corrupted_route_messages_never_raise(message: netlink.RouteMessage, data: st.DataObject) -> None:
    encoded = bytearray(netlink.encode_route_message(message))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    netlink.decode_messages_untrusted(bytes(encoded[:cut]))


def _route_datagram(rtmsg: bytes, attributes: bytes, message_type: int = netlink.RTM_NEWROUTE) -> bytes:
    payload = rtmsg + attributes
    return struct.pack("=IHHII", 16 + len(payload), message_type, 0, 1, 0) + payload


MALFORMED = {
    "short header": b"\x10\x00\x00",
    "length beyond datagram": struct.pack("=IHHII", 64, netlink.RTM_NEWROUTE, 0, 1, 0),
    "length below header": struct.pack("=IHHII", 8, netlink.RTM_NEWROUTE, 0, 1, 0),
    "rtmsg truncated": _route_datagram(b"\x02\x18\x00", b""),
    "attribute overruns message": _route_datagram(
        bytes([2, 24, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), struct.pack("=HH", 40, netlink.RTA_DST) + b"\x0a\x00"
    ),
    "attribute length below header": _route_datagram(
        bytes([2, 24, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), struct.pack("=HH", 2, netlink.RTA_DST)
    ),
    "unknown family": _route_datagram(bytes([7, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), b""),
    "prefix longer than address": _route_datagram(bytes([2, 33, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), b""),
    "ipv4 destination of 3 bytes": _route_datagram(
        bytes([2, 24, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), struct.pack("=HH", 7, netlink.RTA_DST) + b"\x0a\x00\x00\x00"
    ),
    "host bits set": _route_datagram(
        bytes([2, 8, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), struct.pack("=HH", 8, netlink.RTA_DST) + b"\x0a\x00\x00\x01"
    ),
    "prefix without destination": _route_datagram(bytes([2, 8, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), b""),
    "oif of 2 bytes": _route_datagram(
        bytes([2, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), struct.pack("=HHH", 6, netlink.RTA_OIF, 1) + b"\0\0"
    ),
    "error without errno": struct.pack("=IHHII", 18, netlink.NLMSG_ERROR, 0, 1, 0) + b"\0\0",
    "error with positive errno": struct.pack("=IHHIIi", 20, netlink.NLMSG_ERROR, 0, 1, 0, 5),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_kernel_message_is_dropped_counted_and_logged(name: str, caplog: pytest.LogCaptureFixture) -> None:
    drops: Counter[str] = Counter()
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.netlink"):
        assert netlink.decode_messages_untrusted(MALFORMED[name], drops) == []
    assert len(caplog.records) == 1
    assert caplog.records[0].message.startswith("netlink: dropped")
    expected = {
        "short header": "truncated",
        "length beyond datagram": "bad-length",
        "length below header": "bad-length",
    }
    assert drops == {expected.get(name, "malformed"): 1}


def test_a_malformed_message_does_not_hide_the_valid_ones_around_it(caplog: pytest.LogCaptureFixture) -> None:
    data = KERNEL_DONE + MALFORMED["unknown family"] + KERNEL_IPV4_GATEWAY_ROUTE
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.netlink"):
        messages = netlink.decode_messages_untrusted(data)
    assert [type(message) for message in messages] == [netlink.DoneMessage, netlink.RouteMessage]
    assert len(caplog.records) == 1


def test_default_route_without_destination_attribute_is_slash_zero() -> None:
    data = _route_datagram(bytes([10, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0]), b"")
    [message] = netlink.decode_messages_untrusted(data)
    assert isinstance(message, netlink.RouteMessage)
    assert message.destination == ipaddress.ip_network("::/0")


def test_noop_and_unknown_types_are_skipped_silently(caplog: pytest.LogCaptureFixture) -> None:
    data = struct.pack("=IHHII", 16, netlink.NLMSG_NOOP, 0, 1, 0) + struct.pack(
        "=IHHII", 16, 20, 0, 1, 0
    )  # 20: RTM_NEWADDR
    with caplog.at_level(logging.WARNING):
        assert netlink.decode_messages_untrusted(data) == []
    assert not caplog.records


@untimed
@given(st.booleans(), st.integers(-(2**31), 2**31 - 1), u32, u32, u32)
def test_link_messages_round_trip(deleted: bool, index: int, flags: int, seq: int, port_id: int) -> None:
    message = netlink.LinkMessage(deleted, index, flags, seq, port_id)
    assert netlink.decode_messages_untrusted(netlink.encode_link_message(message)) == [message]


def test_truncated_link_message_is_dropped_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    data = struct.pack("=IHHII", 24, netlink.RTM_NEWLINK, 0, 1, 0) + bytes(8)
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.netlink"):
        assert netlink.decode_messages_untrusted(data) == []
    assert "ifinfomsg" in caplog.records[0].message
