from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.tun.rtnetlink import (
    IFA_ADDRESS,
    IFA_F_NODAD,
    IFA_LOCAL,
    IFF_UP,
    IFLA_MTU,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    RTM_NEWADDR,
    RTM_NEWLINK,
    Acknowledgement,
    NetlinkError,
    encode_add_address,
    encode_link_settings,
    parse_acknowledgements_untrusted,
)


def attributes(data: bytes) -> dict[int, bytes]:
    found = {}
    offset = 0
    while offset < len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        found[kind] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def test_link_settings_sets_mtu_and_up_flag_with_change_mask() -> None:
    message = encode_link_settings(7, 42, mtu=1420, up=True)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", message)
    assert (length, kind, flags, seq, pid) == (len(message), RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 42, 0)
    family, _type, index, ifi_flags, change = struct.unpack_from("=BxHiII", message, 16)
    assert (family, index, ifi_flags, change) == (socket.AF_UNSPEC, 7, IFF_UP, IFF_UP)
    assert attributes(message[32:]) == {IFLA_MTU: struct.pack("=I", 1420)}


def test_point_to_point_ipv4_address_is_local_plus_peer_with_host_prefix() -> None:
    message = encode_add_address(3, 1, ipaddress.IPv4Interface("10.33.33.1/24"), ipaddress.IPv4Address("10.33.33.2"))
    _length, kind, flags, _seq, _pid = struct.unpack_from("=IHHII", message)
    assert kind == RTM_NEWADDR
    assert flags == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    assert struct.unpack_from("=BBBBI", message, 16) == (socket.AF_INET, 32, 0, 0, 3)
    assert attributes(message[24:]) == {
        IFA_LOCAL: bytes([10, 33, 33, 1]),
        IFA_ADDRESS: bytes([10, 33, 33, 2]),
    }


def test_ipv6_address_without_peer_keeps_prefix_and_skips_duplicate_detection() -> None:
    local = ipaddress.IPv6Interface("fd00:33::1/64")
    message = encode_add_address(9, 1, local)
    assert struct.unpack_from("=BBBBI", message, 16) == (socket.AF_INET6, 64, IFA_F_NODAD, 0, 9)
    assert attributes(message[24:]) == {IFA_LOCAL: local.ip.packed, IFA_ADDRESS: local.ip.packed}


def test_mixed_ip_versions_are_refused() -> None:
    with pytest.raises(ValueError, match="different IP versions"):
        encode_add_address(1, 1, ipaddress.IPv4Interface("10.0.0.1/32"), ipaddress.IPv6Address("::1"))


def error_message(seq: int, error: int) -> bytes:
    payload = struct.pack("=i", error) + struct.pack("=IHHII", 16, RTM_NEWADDR, 0, seq, 0)
    return struct.pack("=IHHII", 16 + len(payload), NLMSG_ERROR, 0, seq, 0) + payload


def test_acknowledgements_report_errno_per_sequence_number() -> None:
    data = error_message(1, 0) + error_message(2, -errno.EEXIST)
    assert parse_acknowledgements_untrusted(data) == [Acknowledgement(1, 0), Acknowledgement(2, errno.EEXIST)]


def test_truncated_reply_is_a_netlink_error() -> None:
    with pytest.raises(NetlinkError, match="claims"):
        parse_acknowledgements_untrusted(error_message(1, 0)[:-4])


@given(st.binary(max_size=200))
def test_acknowledgement_parser_raises_only_netlink_error(data: bytes) -> None:
    with contextlib.suppress(NetlinkError):
        parse_acknowledgements_untrusted(data)


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 4095)), max_size=5))
def test_acknowledgements_round_trip(entries: list[tuple[int, int]]) -> None:
    data = b"".join(error_message(seq, -code) for seq, code in entries)
    assert parse_acknowledgements_untrusted(data) == [Acknowledgement(seq, code) for seq, code in entries]
