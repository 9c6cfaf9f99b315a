"""Primitives of whitepaper 5.4: BLAKE2s constructions, AEADs, X25519 edge cases, TAI64N."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.wireguard import crypto
from dmnc.wireguard.noise import INITIAL_CHAINING_KEY, INITIAL_HASH

KEY = bytes(range(32))


def test_initial_chaining_key_and_hash_are_the_published_constants() -> None:
    # Every WireGuard implementation starts from these two values (e.g. wireguard-go InitialChainKey/InitialHash).
    assert INITIAL_CHAINING_KEY.hex() == "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
    assert INITIAL_HASH.hex() == "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3"


def test_hmac_is_rfc2104_over_blake2s() -> None:
    assert crypto.hmac(KEY, b"data") == hmac.new(KEY, b"data", hashlib.blake2s).digest()


def test_kdf_outputs_chain_like_hkdf() -> None:
    secret = crypto.hmac(KEY, b"input")
    first = crypto.hmac(secret, b"\x01")
    second = crypto.hmac(secret, first + b"\x02")
    third = crypto.hmac(secret, second + b"\x03")
    assert crypto.kdf1(KEY, b"input") == first
    assert crypto.kdf2(KEY, b"input") == (first, second)
    assert crypto.kdf3(KEY, b"input") == (first, second, third)


def test_mac_is_keyed_blake2s_128() -> None:
    assert crypto.mac(KEY, b"x") == hashlib.blake2s(b"x", key=KEY, digest_size=16).digest()


@given(st.binary(max_size=300), st.binary(max_size=40), st.integers(0, 2**64 - 1))
def test_aead_round_trip_and_tamper_detection(plaintext: bytes, associated: bytes, counter: int) -> None:
    sealed = crypto.aead_encrypt(KEY, counter, plaintext, associated)
    assert len(sealed) == len(plaintext) + 16
    assert crypto.aead_decrypt(KEY, counter, sealed, associated) == plaintext
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(crypto.AuthenticationError):
        crypto.aead_decrypt(KEY, counter, tampered, associated)
    with pytest.raises(crypto.AuthenticationError):
        crypto.aead_decrypt(KEY, counter ^ 1, sealed, associated)


def test_aead_decrypt_rejects_ciphertext_shorter_than_a_tag() -> None:
    with pytest.raises(crypto.AuthenticationError):
        crypto.aead_decrypt(KEY, 0, b"short", b"")


@given(st.binary(max_size=64), st.binary(min_size=24, max_size=24))
def test_xaead_round_trip_and_wrong_associated_data(plaintext: bytes, nonce: bytes) -> None:
    sealed = crypto.xaead_encrypt(KEY, nonce, plaintext, b"mac1")
    assert crypto.xaead_decrypt(KEY, nonce, sealed, b"mac1") == plaintext
    with pytest.raises(crypto.AuthenticationError):
        crypto.xaead_decrypt(KEY, nonce, sealed, b"mac2")


def test_x25519_rejects_low_order_points() -> None:
    with pytest.raises(crypto.InvalidPublicKeyError):
        crypto.x25519(KEY, bytes(32))
    with pytest.raises(crypto.InvalidPublicKeyError):
        crypto.x25519(KEY, (1).to_bytes(32, "little"))


def test_x25519_agrees_both_ways() -> None:
    a, b = bytes([1] * 32), bytes([2] * 32)
    assert crypto.x25519(a, crypto.x25519_base(b)) == crypto.x25519(b, crypto.x25519_base(a))


def test_tai64n_layout() -> None:
    stamp = crypto.tai64n(1.5)
    assert stamp[:8] == (2**62 + 10 + 1).to_bytes(8, "big")
    # 0.5 s = 500_000_000 ns, rounded down to a multiple of 2^24 ns.
    assert int.from_bytes(stamp[8:], "big") == 500_000_000 & ~0xFFFFFF


@given(st.floats(0, 4e9), st.floats(0.02, 1e6))
def test_tai64n_orders_like_time_once_apart_by_more_than_the_whitening(earlier: float, gap: float) -> None:
    assert crypto.tai64n(earlier) < crypto.tai64n(earlier + gap)
