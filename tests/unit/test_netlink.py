"""Netlink framing shared by the route manager and the TUN setup: headers, attributes, acknowledgements, and
malformed bytes that must never raise (RFC 3549 section 2.3.2, linux/netlink.h)."""

from __future__ import annotations

import contextlib
import errno
import logging
import struct
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc import netlink

# Property tests take no time limit: a loaded CI machine must not fail them (speed lives in tests/bench).
untimed = settings(deadline=None)
u32 = st.integers(0, 2**32 - 1)
errnos = st.integers(0, 4095)

# Captured from this lab's kernel (6.x): the end of an RTM_GETROUTE dump, seq 77, port 13848.
KERNEL_DONE = bytes.fromhex("14000000030002004d0000001836000000000000")


def request_error(seq: int, error: int) -> bytes:
    """An NLMSG_ERROR as the kernel sends it without NETLINK_CAP_ACK: the whole request header echoed."""
    payload = struct.pack("=i", error) + struct.pack("=IHHII", 16, 20, 0, seq, 0)
    return struct.pack("=IHHII", 16 + len(payload), netlink.NLMSG_ERROR, 0, seq, 0) + payload


def test_kernel_done_message_decodes() -> None:
    assert netlink.decode_messages_untrusted(KERNEL_DONE, netlink.NO_PAYLOADS) == [
        netlink.DoneMessage(seq=77, port_id=13848, flags=netlink.NLM_F_MULTI)
    ]


def test_acknowledgement_and_refusal_decode_with_their_sequence_numbers() -> None:
    ack = netlink.ErrorMessage(seq=9, port_id=1, error=0)
    refused = netlink.ErrorMessage(seq=10, port_id=1, error=-errno.EEXIST)
    data = netlink.encode_error_message(ack) + netlink.encode_error_message(refused) + request_error(11, -errno.ENODEV)
    assert netlink.decode_messages_untrusted(data, netlink.NO_PAYLOADS) == [
        ack,
        refused,
        netlink.ErrorMessage(seq=11, port_id=0, error=-errno.ENODEV),
    ]


def test_message_header_layout_matches_netlink_h_and_pads_to_four_bytes() -> None:
    data = netlink.encode_message(netlink.Header(24, netlink.NLM_F_REQUEST | netlink.NLM_F_ACK, 5, 7), b"\1\2\3")
    assert data == struct.pack("=IHHII", 19, 24, 0x5, 5, 7) + b"\1\2\3\0"


def test_attribute_is_padded_to_four_bytes_and_its_length_excludes_the_padding() -> None:
    assert netlink.encode_attribute(3, b"ab") == struct.pack("=HH", 6, 3) + b"ab\0\0"
    assert netlink.encode_attribute(4, b"abcd") == struct.pack("=HH", 8, 4) + b"abcd"


def test_group_mask_matches_rtmgrp_constants() -> None:
    # RTMGRP_LINK 0x1, RTMGRP_IPV4_ROUTE 0x40 and RTMGRP_IPV6_ROUTE 0x400 in linux/rtnetlink.h (groups 1, 7, 11)
    assert netlink.group_mask(1, 7, 11) == 0x441


def test_types_without_a_decoder_are_skipped_silently(caplog: pytest.LogCaptureFixture) -> None:
    data = struct.pack("=IHHII", 16, netlink.NLMSG_NOOP, 0, 1, 0) + struct.pack("=IHHII", 20, 24, 0, 1, 0) + bytes(4)
    with caplog.at_level(logging.WARNING):
        assert netlink.decode_messages_untrusted(data, netlink.NO_PAYLOADS) == []
    assert not caplog.records


def test_payload_decoders_are_chosen_by_message_type_and_their_errors_count_as_malformed() -> None:
    def decode_one_byte(header: netlink.Header, payload: bytes) -> tuple[int, bytes]:
        if len(payload) != 1:
            raise netlink.MalformedMessageError(f"{len(payload)} bytes")
        return header.seq, payload

    decoders: netlink.PayloadDecoders[tuple[int, bytes]] = {30: decode_one_byte}
    data = (
        netlink.encode_message(netlink.Header(30, 0, 1, 0), b"x")
        + netlink.encode_message(netlink.Header(30, 0, 2, 0), b"yy")
        + netlink.encode_message(netlink.Header(31, 0, 3, 0), b"z")
        + netlink.encode_message(netlink.Header(30, 0, 4, 0), b"w")
    )
    drops: Counter[str] = Counter()
    assert netlink.decode_messages_untrusted(data, decoders, drops) == [(1, b"x"), (4, b"w")]
    assert drops == {"malformed": 1}


# Framing the kernel would never send: a header cut short, lengths that lie, error messages without their errno.
MALFORMED = {
    "short header": (b"\x10\x00\x00", "truncated"),
    "length beyond datagram": (struct.pack("=IHHII", 64, 24, 0, 1, 0), "bad-length"),
    "length below header": (struct.pack("=IHHII", 8, 24, 0, 1, 0), "bad-length"),
    "error without errno": (struct.pack("=IHHII", 18, netlink.NLMSG_ERROR, 0, 1, 0) + b"\0\0", "malformed"),
    "error with positive errno": (struct.pack("=IHHIIi", 20, netlink.NLMSG_ERROR, 0, 1, 0, 5), "malformed"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_framing_is_dropped_counted_and_logged(name: str, caplog: pytest.LogCaptureFixture) -> None:
    data, reason = MALFORMED[name]
    drops: Counter[str] = Counter()
    with caplog.at_level(logging.WARNING, logger="dmnc.netlink"):
        assert netlink.decode_messages_untrusted(data, netlink.NO_PAYLOADS, drops) == []
    assert [record.message[: len("netlink: dropped")] for record in caplog.records] == ["netlink: dropped"]
    assert drops == {reason: 1}


def test_a_malformed_message_does_not_hide_the_valid_ones_around_it() -> None:
    ack = netlink.ErrorMessage(seq=3, port_id=0, error=0)
    data = KERNEL_DONE + MALFORMED["error with positive errno"][0] + netlink.encode_error_message(ack)
    drops: Counter[str] = Counter()
    assert netlink.decode_messages_untrusted(data, netlink.NO_PAYLOADS, drops) == [
        netlink.DoneMessage(seq=77, port_id=13848),
        ack,
    ]
    assert drops == {"malformed": 1}


@untimed
@given(st.lists(st.tuples(u32, u32, errnos), max_size=8))
def test_acknowledgements_round_trip(entries: list[tuple[int, int, int]]) -> None:
    messages = [netlink.ErrorMessage(seq, port_id, -code) for seq, port_id, code in entries]
    data = b"".join(netlink.encode_error_message(message) for message in messages)
    assert netlink.decode_messages_untrusted(data, netlink.NO_PAYLOADS) == messages


@untimed
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40)), max_size=8))
def test_attributes_round_trip(entries: list[tuple[int, bytes]]) -> None:
    data = b"".join(netlink.encode_attribute(kind, value) for kind, value in entries)
    assert len(data) % netlink.RTA_ALIGNTO == 0
    assert netlink.attributes_untrusted(data) == dict(entries)


@untimed
@given(st.binary(max_size=64))
def test_attribute_parser_raises_only_malformed_message_error(data: bytes) -> None:
    with contextlib.suppress(netlink.MalformedMessageError):
        netlink.attributes_untrusted(data)


@untimed
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    drops: Counter[str] = Counter()
    messages = netlink.decode_messages_untrusted(data, netlink.NO_PAYLOADS, drops)
    assert all(isinstance(message, netlink.ControlMessage) for message in messages)
    assert sum(drops.values()) <= len(data) // netlink.NLMSGHDR.size + 1


@untimed
@given(st.lists(st.tuples(u32, errnos), min_size=1, max_size=5), st.data())
def test_corrupted_acknowledgements_never_raise(entries: list[tuple[int, int]], data: st.DataObject) -> None:
    encoded = bytearray(b"".join(request_error(seq, -code) for seq, code in entries))
    for _ in range(data.draw(st.integers(1, 4))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    netlink.decode_messages_untrusted(bytes(encoded[: data.draw(st.integers(0, len(encoded)))]), netlink.NO_PAYLOADS)
