"""Static keys: clamping, X25519 public keys (RFC 7748 vectors) and WireGuard's base64 text form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.wireguard import KeyFormatError, decode_key, encode_key, generate_private_key, public_key

# RFC 7748 section 6.1, Alice.
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")


def test_public_key_matches_rfc7748_vector() -> None:
    assert public_key(ALICE_PRIVATE) == ALICE_PUBLIC


def test_generated_private_key_is_clamped() -> None:
    key = generate_private_key(lambda size: b"\xff" * size)
    assert key[0] == 0xF8
    assert key[31] == 0x7F
    key = generate_private_key(bytes)
    assert key[31] == 0x40


def test_generate_rejects_short_rng_output() -> None:
    with pytest.raises(ValueError, match="rng returned 31 bytes"):
        generate_private_key(lambda size: bytes(size - 1))


@given(st.binary(min_size=32, max_size=32))
def test_encode_decode_round_trip(key: bytes) -> None:
    text = encode_key(key)
    assert len(text) == 44
    assert decode_key(text) == key


def test_decode_accepts_surrounding_whitespace() -> None:
    assert decode_key(" " + encode_key(ALICE_PUBLIC) + "\n") == ALICE_PUBLIC


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "44 base64 characters"),
        ("abc", "44 base64 characters"),
        ("!" * 43 + "=", "must be base64"),
        ("A" * 44, "canonical base64 of 32 bytes"),  # 33 bytes
        # 44 characters but not canonical: the last character carries bits outside the 32 bytes.
        (encode_key(ALICE_PUBLIC)[:42] + "B=", "canonical base64"),
        ("é" * 44, "must be base64"),
    ],
)
def test_decode_rejects_malformed_text_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(KeyFormatError, match=message):
        decode_key(text)


def test_key_format_error_is_a_value_error() -> None:
    assert issubclass(KeyFormatError, ValueError)


@given(st.text(max_size=60))
def test_decode_of_arbitrary_text_returns_32_bytes_or_raises_key_format_error(text: str) -> None:
    try:
        key = decode_key(text)
    except KeyFormatError:
        return
    assert len(key) == 32
    assert encode_key(key) == text.strip()
