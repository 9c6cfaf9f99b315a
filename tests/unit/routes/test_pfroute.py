"""macOS routing socket messages: byte layouts against xnu's headers (bsd/net/route.h, bsd/net/if_dl.h), round trips,
kernel-style trimmed netmasks, and malformed messages that must never raise."""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.routes import pfroute

# Property tests take no time limit: a loaded CI machine must not fail them (speed lives in tests/bench).
untimed = settings(deadline=None)

net = ipaddress.ip_network


def ours(destination: str, interface_index: int = 12, message_type: int = pfroute.RTM_ADD) -> bytes:
    message = pfroute.RouteSocketMessage(
        message_type=message_type,
        destination=net(destination),
        flags=pfroute.DMNC_ROUTE_FLAGS,
        gateway_interface=interface_index,
        pid=4321,
        seq=7,
    )
    return pfroute.encode_route_message(message)


def test_rt_msghdr_is_92_bytes() -> None:
    assert pfroute.RT_MSGHDR.size == 92


def test_ipv4_route_via_interface_matches_route_add_interface() -> None:
    data = ours("172.17.0.0/16")
    assert len(data) == 92 + 16 + 20 + 16 == 144
    msglen, version, message_type, index = struct.unpack_from("=HBBH", data)
    assert (msglen, version, message_type, index) == (144, 5, pfroute.RTM_ADD, 0)
    flags, addrs, pid, seq, errno = struct.unpack_from("=iiiii", data, 8)
    # RTF_UP|RTF_STATIC as route(8) -interface sets (no RTF_GATEWAY), plus RTF_PROTO1 as dmnc's marker
    assert flags == 0x1 | 0x800 | 0x8000
    assert addrs == pfroute.RTA_DST | pfroute.RTA_GATEWAY | pfroute.RTA_NETMASK == 0x7
    assert (pid, seq, errno) == (4321, 7, 0)
    assert data[92:108] == bytes([16, 2, 0, 0, 172, 17, 0, 0]) + bytes(8)
    assert data[108:128] == bytes([20, 18, 12, 0]) + bytes(16)
    assert data[128:144] == bytes([16, 2, 0, 0, 255, 255, 0, 0]) + bytes(8)


def test_ipv6_route_via_interface_is_168_bytes_with_sockaddr_in6() -> None:
    data = ours("fd00:d0c::/64", interface_index=300)
    assert len(data) == 92 + 28 + 20 + 28 == 168
    destination = data[92:120]
    assert destination[:2] == bytes([28, 30])
    assert destination[8:24] == ipaddress.ip_address("fd00:d0c::").packed
    assert data[120:124] == bytes([20, 18]) + struct.pack("=H", 300)
    assert data[140:142] == bytes([28, 30])
    assert data[140 + 8 : 140 + 24] == bytes([0xFF] * 8 + [0] * 8)


def test_roundup32_pads_to_four_bytes_and_zero_length_takes_four() -> None:
    assert [pfroute.roundup(n) for n in (0, 1, 4, 5, 16, 20, 28, 6)] == [4, 4, 4, 8, 16, 20, 28, 8]


def kernel_message(
    sockaddrs: list[bytes], addrs: int, flags: int, message_type: int = pfroute.RTM_GET, index: int = 5
) -> bytes:
    body = b"".join(sockaddr + bytes(pfroute.roundup(len(sockaddr)) - len(sockaddr)) for sockaddr in sockaddrs)
    header = pfroute.RT_MSGHDR.pack(
        pfroute.RT_MSGHDR.size + len(body), 5, message_type, index, flags, addrs, 99, 3, 0, 0, 0, *([0] * 14)
    )
    return header + body


def sockaddr_in(address: str) -> bytes:
    return pfroute.encode_sockaddr_inet(ipaddress.ip_address(address))


def test_kernel_trimmed_netmask_with_family_zero_decodes() -> None:
    # The kernel sends a /16 mask as sa_len 6 (last non-zero byte + 1), sa_family 0.
    trimmed_mask = bytes([6, 0, 0, 0, 255, 255])
    data = kernel_message(
        [sockaddr_in("172.17.0.0"), pfroute.encode_sockaddr_dl(5), trimmed_mask], 0x7, pfroute.DMNC_ROUTE_FLAGS
    )
    message = pfroute.decode_route_message_untrusted(data)
    assert message is not None
    assert message.destination == net("172.17.0.0/16")
    assert message.gateway_interface == 5
    assert message.interface_index == 5
    assert message.pid == 99


def test_default_route_with_zero_length_netmask_and_ip_gateway() -> None:
    data = kernel_message(
        [sockaddr_in("0.0.0.0"), sockaddr_in("192.168.1.1"), b""], 0x7, pfroute.RTF_UP | pfroute.RTF_GATEWAY
    )
    message = pfroute.decode_route_message_untrusted(data)
    assert message is not None
    assert message.destination == net("0.0.0.0/0")
    assert message.gateway == ipaddress.ip_address("192.168.1.1")


def test_host_route_without_netmask_is_a_full_length_prefix() -> None:
    data = kernel_message([sockaddr_in("10.33.33.2"), pfroute.encode_sockaddr_dl(9)], 0x3, pfroute.RTF_HOST)
    message = pfroute.decode_route_message_untrusted(data)
    assert message is not None
    assert message.destination == net("10.33.33.2/32")


def test_a_route_without_netmask_is_a_host_route_whatever_its_flags() -> None:
    # What xnu dumps for `route add 10.0.0.0 -interface utun3` (no -net, no mask): no RTF_HOST, no RTA_NETMASK, a
    # radix entry with a NULL mask, i.e. a host route (bsd/net/route.c rtrequest_common_locked).
    data = kernel_message([sockaddr_in("10.0.0.0"), pfroute.encode_sockaddr_dl(9)], 0x3, pfroute.RTF_UP)
    message = pfroute.decode_route_message_untrusted(data)
    assert message is not None
    assert message.destination == net("10.0.0.0/32")
    assert not message.flags & pfroute.RTF_HOST


@pytest.mark.parametrize("length", range(8, 17))
def test_inet_sockaddrs_of_8_to_16_bytes_are_valid_as_the_kernel_takes_them(length: int) -> None:
    # xnu's route_output accepts an AF_INET sockaddr from offsetof(sockaddr_in, sin_zero) = 8 bytes on and echoes
    # it as sent (bsd/net/rtsock.c).
    short_destination = sockaddr_in("10.1.2.0")[:length]
    short_destination = bytes([length]) + short_destination[1:]
    data = kernel_message(
        [short_destination, pfroute.encode_sockaddr_dl(9), bytes([7, 0, 0, 0, 255, 255, 255])], 0x7, 3
    )
    message = pfroute.decode_route_message_untrusted(data)
    assert message is not None
    assert message.destination == net("10.1.2.0/24")


def test_a_repeated_problem_is_logged_at_doubling_sightings_but_always_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    drops: Counter[str] = Counter()
    warnings = pfroute.RepeatedWarnings()
    other = kernel_message([sockaddr_in("10.9.0.1"), bytes([6, 0, 0, 0, 255, 255])], 0x5, 0)
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.pfroute"):
        for _ in range(20):
            assert pfroute.decode_messages_untrusted(MALFORMED["host bits set"], drops, warnings) == []
        assert pfroute.decode_route_message_untrusted(other, drops, warnings) is None
    assert drops == {"malformed": 21}
    messages = [record.message for record in caplog.records]
    assert len(messages) == 6  # sightings 1, 2, 4, 8 and 16 of the first problem, then the other destination's first
    assert messages[0] == "routing socket: dropped a message: destination 10.0.0.1/16 has host bits set"
    assert messages[4].endswith("(seen 16 times)")
    assert "10.9.0.1/16" in messages[5]


def test_repeated_warnings_remember_a_bounded_number_of_problems() -> None:
    warnings = pfroute.RepeatedWarnings(remembered=3)
    assert [warnings.sighting(f"problem {n}") for n in range(10)] == [1] * 10
    assert warnings.sighting("problem 9") == 2


def test_link_layer_entries_and_interface_messages_are_skipped_silently(caplog: pytest.LogCaptureFixture) -> None:
    link_entry = kernel_message([pfroute.encode_sockaddr_dl(4), pfroute.encode_sockaddr_dl(4)], 0x3, pfroute.RTF_HOST)
    if_info = struct.pack("=HBB", 112, 5, 0xE) + bytes(108)  # RTM_IFINFO: if_msghdr, another layout
    with caplog.at_level(logging.WARNING):
        assert pfroute.decode_route_message_untrusted(link_entry) is None
        assert pfroute.decode_route_message_untrusted(if_info) is None
    assert not caplog.records


@st.composite
def route_socket_messages(draw: st.DrawFn) -> pfroute.RouteSocketMessage:
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    address_type = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    prefix = draw(st.integers(0, bits))
    network_type = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    destination = network_type((draw(st.integers(0, 2**bits - 1)), prefix), strict=False)
    host = prefix == bits and draw(st.booleans())
    gateway_kind = draw(st.sampled_from(["none", "interface", "address"]))
    return pfroute.RouteSocketMessage(
        message_type=draw(st.sampled_from(sorted(pfroute.ROUTE_CHANGE_TYPES))),
        destination=destination,
        flags=draw(st.integers(0, 2**31 - 1)) & ~pfroute.RTF_HOST | (pfroute.RTF_HOST if host else 0),
        interface_index=draw(st.integers(0, 0xFFFF)),
        gateway_interface=draw(st.integers(0, 0xFFFF)) if gateway_kind == "interface" else None,
        gateway=address_type(draw(st.integers(0, 2**bits - 1))) if gateway_kind == "address" else None,
        pid=draw(st.integers(-(2**31), 2**31 - 1)),
        seq=draw(st.integers(-(2**31), 2**31 - 1)),
        errno=draw(st.integers(0, 200)),
    )


@untimed
@given(route_socket_messages())
def test_route_messages_round_trip(message: pfroute.RouteSocketMessage) -> None:
    assert pfroute.decode_route_message_untrusted(pfroute.encode_route_message(message)) == message


@untimed
@given(st.lists(route_socket_messages(), max_size=5))
def test_dump_of_consecutive_messages_round_trips(messages: list[pfroute.RouteSocketMessage]) -> None:
    data = b"".join(pfroute.encode_route_message(message) for message in messages)
    assert pfroute.decode_messages_untrusted(data) == messages


@untimed
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    pfroute.decode_route_message_untrusted(data)
    pfroute.decode_messages_untrusted(data)


@untimed
@given(route_socket_messages(), st.data())
def test_corrupted_messages_never_raise(message: pfroute.RouteSocketMessage, data: st.DataObject) -> None:
    encoded = bytearray(pfroute.encode_route_message(message))
    for _ in range(data.draw(st.integers(1, 4))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    pfroute.decode_route_message_untrusted(bytes(encoded))
    pfroute.decode_messages_untrusted(bytes(encoded))


GOOD = ours("172.17.0.0/16")
MALFORMED = {
    "shorter than any header": b"\x90\x00",
    "msglen disagrees": struct.pack("=H", 100) + GOOD[2:],
    "wrong version": GOOD[:2] + b"\x04" + GOOD[3:],
    "route header truncated": struct.pack("=HBB", 40, 5, pfroute.RTM_ADD) + bytes(36),
    "sockaddr overruns": kernel_message([bytes([0x40, 2]) + bytes(14)], 0x1, 0),
    "announced sockaddr missing": kernel_message([sockaddr_in("10.0.0.0")], 0x3, pfroute.RTF_HOST),
    "no destination": kernel_message([pfroute.encode_sockaddr_dl(3)], 0x2, 0),
    "non-contiguous netmask": kernel_message([sockaddr_in("10.0.0.0"), bytes([8, 0, 0, 0, 255, 0, 255, 0])], 0x5, 0),
    "host bits set": kernel_message([sockaddr_in("10.0.0.1"), bytes([6, 0, 0, 0, 255, 255])], 0x5, 0),
    "inet sockaddr too short": kernel_message([bytes([6, 2, 0, 0, 10, 0]), bytes([5, 0, 0, 0, 255])], 0x5, 0),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_message_is_dropped_counted_and_logged(name: str, caplog: pytest.LogCaptureFixture) -> None:
    drops: Counter[str] = Counter()
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.pfroute"):
        assert pfroute.decode_route_message_untrusted(MALFORMED[name], drops) is None
    assert len(caplog.records) == 1
    assert caplog.records[0].message.startswith("routing socket: dropped")
    assert drops == {"malformed": 1}


def test_dump_with_a_bad_length_keeps_what_came_before(caplog: pytest.LogCaptureFixture) -> None:
    drops: Counter[str] = Counter()
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.pfroute"):
        messages = pfroute.decode_messages_untrusted(GOOD + struct.pack("=H", 500) + bytes(10), drops)
    assert [message.destination for message in messages] == [net("172.17.0.0/16")]
    assert len(caplog.records) == 1
    assert drops == {"bad-length": 1}


def test_encode_rejects_impossible_routes() -> None:
    with pytest.raises(ValueError, match="not both"):
        pfroute.encode_route_message(
            pfroute.RouteSocketMessage(
                pfroute.RTM_ADD, net("10.0.0.0/8"), gateway_interface=1, gateway=ipaddress.ip_address("10.0.0.1")
            )
        )
    with pytest.raises(ValueError, match="RTF_HOST"):
        pfroute.encode_route_message(pfroute.RouteSocketMessage(pfroute.RTM_ADD, net("10.0.0.0/8"), pfroute.RTF_HOST))


def if_info(index: int, length: int = 112, message_type: int = pfroute.RTM_IFINFO) -> bytes:
    header = pfroute.IF_MSGHDR.pack(length, 5, message_type, 0, 0x8051, index)
    return header + bytes(112 - len(header))


def test_interface_message_gives_its_index() -> None:
    assert pfroute.decode_interface_index_untrusted(if_info(21)) == 21


def test_route_messages_are_not_interface_messages() -> None:
    assert pfroute.decode_interface_index_untrusted(GOOD) is None


def test_interface_message_with_wrong_length_is_dropped_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.pfroute"):
        assert pfroute.decode_interface_index_untrusted(if_info(21, length=400)) is None
    assert len(caplog.records) == 1


@untimed
@given(st.binary(max_size=200))
def test_interface_decoder_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    pfroute.decode_interface_index_untrusted(data)
