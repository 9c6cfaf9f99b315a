"""The primitives of whitepaper section 5.4: X25519, (X)ChaCha20-Poly1305, BLAKE2s HASH/MAC/HMAC/KDF, TAI64N.

X25519 and the AEADs call libsodium through PyNaCl's cffi `lib`: the handshake is not hot, but this keeps one
binding for everything and lets the transport path (see `transport.py`) share it. Failures of libsodium become
`AuthenticationError` or `InvalidPublicKeyError`, never a library exception.
"""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import struct
from collections.abc import Callable
from typing import Final

import nacl.bindings  # noqa: F401  # importing the bindings runs sodium_init() before `lib` is used
from nacl._sodium import ffi, lib

from dmnc.wireguard import constants

HASH_SIZE: Final = 32
_CHACHA_NONCE_SIZE: Final = 12
_ZERO_KEY: Final = bytes(constants.KEY_SIZE)


class AuthenticationError(Exception):
    """An AEAD ciphertext did not authenticate."""


class InvalidPublicKeyError(Exception):
    """X25519 with this public key yields the all-zero shared secret (a low-order point)."""


def hash_(*parts: bytes) -> bytes:
    """HASH(a || b || ...): BLAKE2s-256 of the concatenation."""
    digest = hashlib.blake2s()
    for part in parts:
        digest.update(part)
    return digest.digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, data): keyed BLAKE2s with a 128-bit output."""
    return hashlib.blake2s(data, digest_size=constants.MAC_SIZE, key=key).digest()


def hmac(key: bytes, data: bytes) -> bytes:
    """HMAC(key, data) with BLAKE2s-256 as the hash (RFC 2104)."""
    return std_hmac.digest(key, data, hashlib.blake2s)


def kdf1(key: bytes, data: bytes) -> bytes:
    """KDF1 of whitepaper 5.4: HKDF-style extract-and-expand to one 32-byte output."""
    secret = hmac(key, data)
    return hmac(secret, b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    secret = hmac(key, data)
    first = hmac(secret, b"\x01")
    return first, hmac(secret, first + b"\x02")


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    secret = hmac(key, data)
    first = hmac(secret, b"\x01")
    second = hmac(secret, first + b"\x02")
    return first, second, hmac(secret, second + b"\x03")


def chacha_nonce(counter: int) -> bytes:
    """The 96-bit ChaCha20-Poly1305 nonce of whitepaper 5.4: 32 zero bits, then the counter little-endian."""
    return struct.pack("<4xQ", counter)


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, associated_data: bytes) -> bytes:
    ciphertext = ffi.new("unsigned char[]", len(plaintext) + constants.AEAD_TAG_SIZE)
    lib.crypto_aead_chacha20poly1305_ietf_encrypt(
        ciphertext,
        ffi.NULL,
        plaintext,
        len(plaintext),
        associated_data,
        len(associated_data),
        ffi.NULL,
        chacha_nonce(counter),
        key,
    )
    return bytes(ffi.buffer(ciphertext))


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, associated_data: bytes) -> bytes:
    return _open(
        lib.crypto_aead_chacha20poly1305_ietf_decrypt,
        "ChaCha20-Poly1305",
        key,
        chacha_nonce(counter),
        ciphertext,
        associated_data=associated_data,
    )


def xaead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    ciphertext = ffi.new("unsigned char[]", len(plaintext) + constants.AEAD_TAG_SIZE)
    lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        ciphertext, ffi.NULL, plaintext, len(plaintext), associated_data, len(associated_data), ffi.NULL, nonce, key
    )
    return bytes(ffi.buffer(ciphertext))


def xaead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    return _open(
        lib.crypto_aead_xchacha20poly1305_ietf_decrypt,
        "XChaCha20-Poly1305",
        key,
        nonce,
        ciphertext,
        associated_data=associated_data,
    )


def _open(
    decrypt: Callable[..., int], name: str, key: bytes, nonce: bytes, ciphertext: bytes, *, associated_data: bytes
) -> bytes:
    """Authenticated decryption with one of libsodium's IETF AEADs (same signature for both): the plaintext, or
    AuthenticationError when the tag does not match."""
    if len(ciphertext) < constants.AEAD_TAG_SIZE:
        raise AuthenticationError("ciphertext shorter than its tag")
    plaintext = ffi.new("unsigned char[]", max(len(ciphertext) - constants.AEAD_TAG_SIZE, 1))
    status = decrypt(
        plaintext, ffi.NULL, ffi.NULL, ciphertext, len(ciphertext), associated_data, len(associated_data), nonce, key
    )
    if status != 0:
        raise AuthenticationError(f"{name} tag mismatch")
    return bytes(ffi.buffer(plaintext, len(ciphertext) - constants.AEAD_TAG_SIZE))


def x25519(private_key: bytes, public_key: bytes) -> bytes:
    """DH(private, public); raises InvalidPublicKeyError for low-order points (libsodium returns -1 for those)."""
    shared = ffi.new("unsigned char[]", constants.KEY_SIZE)
    if lib.crypto_scalarmult(shared, private_key, public_key) != 0:
        raise InvalidPublicKeyError("X25519 result is the all-zero point")
    result = bytes(ffi.buffer(shared))
    if std_hmac.compare_digest(result, _ZERO_KEY):
        raise InvalidPublicKeyError("X25519 result is the all-zero point")
    return result


def x25519_base(private_key: bytes) -> bytes:
    public = ffi.new("unsigned char[]", constants.KEY_SIZE)
    lib.crypto_scalarmult_base(public, private_key)
    return bytes(ffi.buffer(public))


def tai64n(unix_time: float) -> bytes:
    """TAI64N label of `unix_time`, nanoseconds whitened to 2^24 ns like wireguard-go (see constants)."""
    seconds = int(unix_time // 1)
    nanoseconds = int((unix_time - seconds) * 1_000_000_000) & ~constants.TIMESTAMP_WHITENER_MASK
    return struct.pack(">QI", constants.TAI64_EPOCH + seconds, nanoseconds)
