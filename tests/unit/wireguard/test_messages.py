"""Wire formats: sizes, round trips of every parser, and one typed error for anything malformed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.wireguard import DropReason, MessageError
from dmnc.wireguard.messages import CookieReply, Initiation, Response, Transport, message_type_untrusted

u32 = st.integers(0, 2**32 - 1)


def fixed(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


initiations = st.builds(Initiation, u32, fixed(32), fixed(48), fixed(28), fixed(16), fixed(16))
responses = st.builds(Response, u32, u32, fixed(32), fixed(16), fixed(16), fixed(16))
cookie_replies = st.builds(CookieReply, u32, fixed(24), fixed(32))
transports = st.builds(Transport, u32, st.integers(0, 2**64 - 1), st.binary(min_size=16, max_size=200))


@given(initiations)
def test_initiation_round_trip(message: Initiation) -> None:
    packed = message.pack()
    assert len(packed) == 148
    assert packed[:4] == b"\x01\x00\x00\x00"
    assert Initiation.parse_untrusted(packed) == message


@given(responses)
def test_response_round_trip(message: Response) -> None:
    packed = message.pack()
    assert len(packed) == 92
    assert Response.parse_untrusted(packed) == message


@given(cookie_replies)
def test_cookie_reply_round_trip(message: CookieReply) -> None:
    packed = message.pack()
    assert len(packed) == 64
    assert CookieReply.parse_untrusted(packed) == message


@given(transports)
def test_transport_round_trip(message: Transport) -> None:
    packed = message.pack()
    assert len(packed) == 16 + len(message.encrypted_packet)
    assert Transport.parse_untrusted(packed) == message


@pytest.mark.parametrize("parser", [Initiation.parse_untrusted, Response.parse_untrusted, CookieReply.parse_untrusted])
@given(data=st.binary(max_size=200))
def test_fixed_size_parsers_raise_only_message_error(parser: Callable[[bytes], object], data: bytes) -> None:
    reason = None
    try:
        parser(data)
    except MessageError as error:
        reason = error.reason
    assert reason in {None, DropReason.BAD_LENGTH, DropReason.UNKNOWN_TYPE}


def test_length_and_type_errors_name_their_reason() -> None:
    valid = Initiation(1, bytes(32), bytes(48), bytes(28)).pack()
    with pytest.raises(MessageError) as short:
        Initiation.parse_untrusted(valid[:-1])
    assert short.value.reason is DropReason.BAD_LENGTH
    with pytest.raises(MessageError) as wrong_type:
        Response.parse_untrusted(valid[:92])
    assert wrong_type.value.reason is DropReason.UNKNOWN_TYPE
    with pytest.raises(MessageError) as tiny:
        Transport.parse_untrusted(b"\x04\x00\x00\x00" + bytes(27))
    assert tiny.value.reason is DropReason.TOO_SHORT


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", DropReason.TOO_SHORT),
        (b"\x01\x00\x00", DropReason.TOO_SHORT),
        (b"\x05\x00\x00\x00", DropReason.UNKNOWN_TYPE),
        (b"\x00\x00\x00\x00", DropReason.UNKNOWN_TYPE),
        (b"\x01\x00\x00\x01", DropReason.UNKNOWN_TYPE),  # reserved bytes must be zero
    ],
)
def test_message_type_classification(data: bytes, reason: DropReason) -> None:
    with pytest.raises(MessageError) as error:
        message_type_untrusted(data)
    assert error.value.reason is reason


@pytest.mark.parametrize("kind", [1, 2, 3, 4])
def test_message_type_accepts_the_four_types(kind: int) -> None:
    assert message_type_untrusted(bytes([kind, 0, 0, 0])) == kind
