"""The direct path probe's ICMP codec (RFC 792, RFC 4443): requests with a valid checksum, replies matched by type,
identifier and sequence, and any bytes from the network judged without raising."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.supervisor.echo_probe import (
    ECHO_HEADER,
    ICMP_ECHO_REPLY,
    ICMPV6_ECHO_REPLY,
    PAYLOAD,
    echo_request,
    is_echo_reply_untrusted,
)

untimed = settings(deadline=None)
IPV4_HEADER = bytes([0x45]) + bytes(19)  # version 4, IHL 5: as a raw IPv4 socket delivers it


def ones_complement_sum(data: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def reply(version: int, identifier: int, sequence: int) -> bytes:
    kind = ICMP_ECHO_REPLY if version == 4 else ICMPV6_ECHO_REPLY
    message = ECHO_HEADER.pack(kind, 0, 0, identifier, sequence) + PAYLOAD
    return IPV4_HEADER + message if version == 4 else message


def test_an_ipv4_request_sums_to_all_ones_and_an_ipv6_one_leaves_the_checksum_to_the_kernel() -> None:
    request = echo_request(4, 0x1234, 7)
    assert request[:1] == bytes([8])
    assert ones_complement_sum(request) == 0xFFFF
    assert echo_request(6, 0x1234, 7)[:4] == bytes([128, 0, 0, 0])


def test_only_the_matching_reply_counts() -> None:
    assert is_echo_reply_untrusted(reply(4, 1, 2), 4, 1, 2)
    assert is_echo_reply_untrusted(reply(6, 1, 2), 6, 1, 2)
    assert not is_echo_reply_untrusted(reply(4, 1, 3), 4, 1, 2)  # another sequence
    assert not is_echo_reply_untrusted(reply(4, 9, 2), 4, 1, 2)  # another prober
    assert not is_echo_reply_untrusted(IPV4_HEADER + echo_request(4, 1, 2), 4, 1, 2)  # our own request, looped
    assert not is_echo_reply_untrusted(reply(6, 1, 2), 4, 1, 2)


@untimed
@given(st.binary(max_size=100), st.sampled_from([4, 6]), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_any_bytes_are_judged_without_raising(data: bytes, version: int, identifier: int, sequence: int) -> None:
    assert is_echo_reply_untrusted(data, version, identifier, sequence) in {True, False}


@untimed
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_every_ipv4_request_has_a_valid_checksum(identifier: int, sequence: int) -> None:
    assert ones_complement_sum(echo_request(4, identifier, sequence)) == 0xFFFF
