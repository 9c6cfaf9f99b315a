"""Static keys: generation, public key derivation and the base64 text form used by `wg` and config files."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from dmnc.wireguard import constants, crypto

_ENCODED_KEY_LENGTH = 44  # base64 of 32 bytes, with one '=' of padding


class KeyFormatError(ValueError):
    """A key given as text is not WireGuard's base64 of exactly 32 bytes."""


def generate_private_key(rng: Callable[[int], bytes]) -> bytes:
    """32 random bytes clamped into an X25519 scalar (RFC 7748 section 5), as `wg genkey` does."""
    scalar = bytearray(rng(constants.KEY_SIZE))
    if len(scalar) != constants.KEY_SIZE:
        raise ValueError(f"rng returned {len(scalar)} bytes instead of {constants.KEY_SIZE}")
    scalar[0] &= 248
    scalar[31] &= 127
    scalar[31] |= 64
    return bytes(scalar)


def public_key(private_key: bytes) -> bytes:
    if len(private_key) != constants.KEY_SIZE:
        raise ValueError(f"private key must be {constants.KEY_SIZE} bytes, got {len(private_key)}")
    return crypto.x25519_base(private_key)


def encode_key(key: bytes) -> str:
    if len(key) != constants.KEY_SIZE:
        raise ValueError(f"key must be {constants.KEY_SIZE} bytes, got {len(key)}")
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """Parse WireGuard's base64 key text; raises KeyFormatError saying what is wrong."""
    stripped = text.strip()
    if len(stripped) != _ENCODED_KEY_LENGTH:
        raise KeyFormatError(
            f"a WireGuard key is {_ENCODED_KEY_LENGTH} base64 characters (32 bytes), got {len(stripped)} characters"
        )
    try:
        key = base64.b64decode(stripped.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as error:
        raise KeyFormatError(f"a WireGuard key must be base64: {error}") from None
    if len(key) != constants.KEY_SIZE or base64.b64encode(key).decode("ascii") != stripped:
        raise KeyFormatError("a WireGuard key must be the canonical base64 of 32 bytes")
    return key
