"""RTM_GET on the macOS routing socket: the request byte for byte as `route -n get` writes it, and the kernel's reply
as xnu's route_output builds it (bsd/net/rtsock.c `report:`; bsd/net/route.h rt_msghdr, bsd/net/if_dl.h
sockaddr_dl), including replies that are not ours and replies that must never raise."""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.routes import pfroute

untimed = settings(deadline=None)

OUR_PID = 4321
OUR_SEQ = 17
# The 56 bytes of rt_metrics, all zero in a request.
NO_METRICS = bytes(56)


def sockaddr_dl(index: int, name: bytes, link_address: bytes = b"") -> bytes:
    """A sockaddr_dl as xnu keeps an interface's link address (if_lladdr): the name, then the link-layer address
    (none on a utun), sized at least sizeof(struct sockaddr_dl) = 20 bytes."""
    length = max(20, 8 + len(name) + len(link_address))
    header = struct.pack("=BBHBBBB", length, 18, index, 0xFF, len(name), len(link_address), 0)
    return header + (name + link_address).ljust(length - 8, b"\0")


def sockaddr_in(address: str) -> bytes:
    return bytes([16, 2, 0, 0]) + ipaddress.IPv4Address(address).packed + bytes(8)


def padded(sockaddr: bytes) -> bytes:
    return sockaddr + bytes(-len(sockaddr) % 4 if sockaddr else 4)


def kernel_reply(
    *sockaddrs: bytes,
    addrs: int,
    index: int,
    flags: int = 0x1 | 0x40 | 0x100,  # RTF_UP | RTF_DONE | RTF_CLONING
    pid: int = OUR_PID,
    seq: int = OUR_SEQ,
    errno: int = 0,
    message_type: int = 4,
) -> bytes:
    body = b"".join(padded(sockaddr) for sockaddr in sockaddrs)
    header = struct.pack("=HBBHxxiiiiiiI", 92 + len(body), 5, message_type, index, flags, addrs, pid, seq, errno, 0, 0)
    return header + NO_METRICS + body


# What xnu answers for `route -n get 172.30.5.1` while another tunnel's utun3 holds 172.30.5.0/24: DST, GATEWAY
# (the interface, AF_LINK), NETMASK (trimmed to its last non-zero byte, family 0), IFP (the interface's link
# address, with its name), IFA (the address the route sends from).
SHADOWING_REPLY = kernel_reply(
    sockaddr_in("172.30.5.0"),
    sockaddr_dl(9, b""),
    bytes([7, 0, 0, 0, 255, 255, 255]),
    sockaddr_dl(9, b"utun3"),
    sockaddr_in("10.33.33.1"),
    addrs=0x1 | 0x2 | 0x4 | 0x10 | 0x20,
    index=9,
)


def test_lookup_request_is_what_route_get_writes() -> None:
    request = pfroute.encode_lookup_request(ipaddress.ip_address("172.30.5.1"), pid=OUR_PID, seq=OUR_SEQ)
    expected_header = (
        bytes.fromhex("8000")  # rtm_msglen 128 = 92 + sockaddr_in 16 + sockaddr_dl 20
        + bytes([5, 4])  # RTM_VERSION, RTM_GET
        + bytes(4)  # rtm_index 0, padding
        + struct.pack("=i", 0x805)  # RTF_UP | RTF_HOST | RTF_STATIC
        + struct.pack("=i", 0x11)  # RTA_DST | RTA_IFP: the reply then names the interface
        + struct.pack("=ii", OUR_PID, OUR_SEQ)
        + bytes(12)  # errno, use, inits
        + NO_METRICS
    )
    expected_dst = bytes([16, 2, 0, 0, 172, 30, 5, 1]) + bytes(8)
    expected_ifp = bytes([20, 18]) + bytes(18)  # an empty AF_LINK sockaddr: "tell me the interface"
    assert request == expected_header + expected_dst + expected_ifp


def test_ipv6_lookup_request_carries_a_sockaddr_in6() -> None:
    request = pfroute.encode_lookup_request(ipaddress.ip_address("fd77:5::1"), pid=1, seq=2)
    assert len(request) == 92 + 28 + 20
    assert request[92:94] == bytes([28, 30])  # sin6_len, AF_INET6 (Darwin's number)
    assert request[100:116] == ipaddress.IPv6Address("fd77:5::1").packed


def test_reply_gives_the_route_the_kernel_picked_and_its_interface() -> None:
    answer = pfroute.decode_lookup_reply_untrusted(SHADOWING_REPLY, pid=OUR_PID, seq=OUR_SEQ)
    assert answer is not None
    assert answer.route.destination == ipaddress.ip_network("172.30.5.0/24")
    assert answer.interface_index == 9
    assert answer.interface_name == "utun3"
    assert answer.route.gateway_interface == 9


def test_reply_with_an_ip_gateway_and_a_default_route() -> None:
    reply = kernel_reply(
        sockaddr_in("0.0.0.0"),
        sockaddr_in("192.168.1.1"),
        b"",  # the default route's netmask: sa_len 0, which takes 4 bytes
        sockaddr_dl(4, b"en0", bytes([0x3C, 0x22, 0xFB, 0, 0, 1])),
        sockaddr_in("192.168.1.20"),
        addrs=0x1 | 0x2 | 0x4 | 0x10 | 0x20,
        index=4,
        flags=0x1 | 0x2 | 0x40,
    )
    answer = pfroute.decode_lookup_reply_untrusted(reply, pid=OUR_PID, seq=OUR_SEQ)
    assert answer is not None
    assert answer.route.destination == ipaddress.ip_network("0.0.0.0/0")
    assert answer.route.gateway == ipaddress.ip_address("192.168.1.1")
    assert (answer.interface_index, answer.interface_name) == (4, "en0")


def test_reply_without_interface_sockaddrs_has_no_name() -> None:
    reply = kernel_reply(sockaddr_in("172.30.5.0"), bytes([7, 0, 0, 0, 255, 255, 255]), addrs=0x1 | 0x4, index=0)
    answer = pfroute.decode_lookup_reply_untrusted(reply, pid=OUR_PID, seq=OUR_SEQ)
    assert answer is not None
    assert answer.interface_name is None


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(kernel_reply(sockaddr_in("172.30.5.0"), addrs=0x1, index=9, pid=999), id="another process"),
        pytest.param(kernel_reply(sockaddr_in("172.30.5.0"), addrs=0x1, index=9, seq=OUR_SEQ + 1), id="older seq"),
        pytest.param(kernel_reply(sockaddr_in("172.30.5.0"), addrs=0x1, index=9, message_type=1), id="an RTM_ADD"),
        pytest.param(kernel_reply(sockaddr_in("172.30.5.1"), addrs=0x1, index=0, errno=3), id="refused (ESRCH)"),
    ],
)
def test_messages_that_are_not_the_answer_are_skipped_without_a_log_line(
    reply: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert pfroute.decode_lookup_reply_untrusted(reply, pid=OUR_PID, seq=OUR_SEQ) is None
    assert not caplog.records


def test_an_interface_name_overrunning_its_sockaddr_is_a_counted_drop(caplog: pytest.LogCaptureFixture) -> None:
    overrun = bytearray(sockaddr_dl(9, b"utun3"))
    overrun[5] = 40  # sdl_nlen beyond sdl_len
    reply = kernel_reply(sockaddr_in("172.30.5.0"), bytes(overrun), addrs=0x1 | 0x10, index=9)
    drops: Counter[str] = Counter()
    with caplog.at_level(logging.WARNING, logger="dmnc.routes.pfroute"):
        assert pfroute.decode_lookup_reply_untrusted(reply, pid=OUR_PID, seq=OUR_SEQ, drops=drops) is None
    assert drops == {"malformed": 1}
    assert "interface name overruns" in caplog.text


def test_the_link_name_reader_is_shared_with_the_interface_list() -> None:
    assert pfroute.link_name_untrusted(sockaddr_dl(21, b"utun20")) == "utun20"


@st.composite
def lookup_replies(draw: st.DrawFn) -> tuple[bytes, ipaddress.IPv4Network | ipaddress.IPv6Network, int, str]:
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    network_type = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    destination = network_type((draw(st.integers(0, 2**bits - 1)), draw(st.integers(0, bits))), strict=False)
    index = draw(st.integers(1, 0xFFFF))
    name = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=15))
    route = pfroute.RouteSocketMessage(
        pfroute.RTM_GET,
        destination,
        pfroute.RTF_UP | pfroute.RTF_DONE | (pfroute.RTF_HOST if destination.prefixlen == bits else 0),
        interface_index=index,
        gateway_interface=index,
        pid=OUR_PID,
        seq=OUR_SEQ,
    )
    encoded = pfroute.encode_route_message(route)
    addrs = struct.unpack_from("=i", encoded, 12)[0] | pfroute.RTA_IFP
    # RTA_IFP (0x10) comes after DST, GATEWAY and NETMASK, so it is appended; msglen and addrs are patched.
    body = encoded[92:] + padded(sockaddr_dl(index, name.encode()))
    header = bytearray(encoded[:92])
    struct.pack_into("=H", header, 0, 92 + len(body))
    struct.pack_into("=i", header, 12, addrs)
    return bytes(header) + body, destination, index, name


@untimed
@given(lookup_replies())
def test_replies_decode_to_their_route_and_interface(
    case: tuple[bytes, ipaddress.IPv4Network | ipaddress.IPv6Network, int, str],
) -> None:
    reply, destination, index, name = case
    answer = pfroute.decode_lookup_reply_untrusted(reply, pid=OUR_PID, seq=OUR_SEQ)
    assert answer is not None
    assert (answer.route.destination, answer.interface_index, answer.interface_name) == (destination, index, name)


@untimed
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    pfroute.decode_lookup_reply_untrusted(data, pid=OUR_PID, seq=OUR_SEQ)


@untimed
@given(lookup_replies(), st.data())
def test_corrupted_replies_never_raise(
    case: tuple[bytes, ipaddress.IPv4Network | ipaddress.IPv6Network, int, str], data: st.DataObject
) -> None:
    encoded = bytearray(case[0])
    for _ in range(data.draw(st.integers(1, 4))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    pfroute.decode_lookup_reply_untrusted(bytes(encoded), pid=OUR_PID, seq=OUR_SEQ)
