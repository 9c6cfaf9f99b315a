"""The data fast path (whitepaper 5.4.6): ChaCha20-Poly1305 of transport packets into preallocated buffers.

libsodium is called through PyNaCl's cffi `lib` directly: PyNaCl's public wrapper allocates and copies per call and
costs several times more (DESIGN.md, "Data path budget"). One `TransportCipher` belongs to one Device and is used
from one thread, so its buffers are reused for every packet.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import nacl.bindings  # noqa: F401  # importing the bindings runs sodium_init() before `lib` is used
from nacl._sodium import ffi, lib

from dmnc.wireguard import constants
from dmnc.wireguard.session import Keypair

MAX_PACKET_SIZE: Final = 65535  # largest IP packet (IPv4 total length / IPv6 jumbograms are not supported)
_HEADER: Final = struct.Struct("<IIQ")
_NONCE_COUNTER: Final = struct.Struct("<Q")
_NONCE_COUNTER_OFFSET: Final = 4  # whitepaper 5.4.6: 32 zero bits, then the 64-bit little-endian counter
_ZERO_PADDING: Final = bytes(constants.PADDING_MULTIPLE)
_HEADER_SIZE: Final = constants.TRANSPORT_HEADER_SIZE
_TAG_SIZE: Final = constants.AEAD_TAG_SIZE


def padded_length(packet_length: int, mtu: int) -> int:
    """Plaintext length after zero padding to a multiple of 16, never past the MTU (wireguard-go send.go)."""
    if packet_length >= mtu:
        return packet_length
    return min((packet_length + constants.PADDING_MULTIPLE - 1) & -constants.PADDING_MULTIPLE, mtu)


class TransportCipher:
    """Seals IP packets into transport messages and opens them, reusing the same buffers for every packet."""

    __slots__ = (
        "_mtu",
        "_nonce",
        "_nonce_pointer",
        "_opened",
        "_opened_pointer",
        "_opened_view",
        "_sealed",
        "_sealed_pointer",
        "_sealed_view",
    )

    def __init__(self, mtu: int) -> None:
        self._mtu = mtu
        self._sealed = bytearray(_HEADER_SIZE + MAX_PACKET_SIZE + constants.PADDING_MULTIPLE + _TAG_SIZE)
        self._sealed_view = memoryview(self._sealed)
        self._sealed_pointer: Any = ffi.from_buffer(self._sealed)
        self._opened = bytearray(MAX_PACKET_SIZE + constants.PADDING_MULTIPLE)
        self._opened_view = memoryview(self._opened)
        self._opened_pointer: Any = ffi.from_buffer(self._opened)
        self._nonce = bytearray(12)
        self._nonce_pointer: Any = ffi.from_buffer(self._nonce)

    def seal(self, keypair: Keypair, counter: int, packet: bytes) -> bytes:
        """The complete transport message carrying `packet` (len <= MAX_PACKET_SIZE) under `counter`."""
        length = len(packet)
        padded = padded_length(length, self._mtu)
        buffer = self._sealed_view
        _HEADER.pack_into(self._sealed, 0, constants.MESSAGE_TRANSPORT, keypair.remote_index, counter)
        buffer[_HEADER_SIZE : _HEADER_SIZE + length] = packet
        if padded != length:
            buffer[_HEADER_SIZE + length : _HEADER_SIZE + padded] = _ZERO_PADDING[: padded - length]
        _NONCE_COUNTER.pack_into(self._nonce, _NONCE_COUNTER_OFFSET, counter)
        payload = self._sealed_pointer + _HEADER_SIZE
        # In-place encryption (message and ciphertext at the same address) is supported by libsodium.
        lib.crypto_aead_chacha20poly1305_ietf_encrypt(
            payload, ffi.NULL, payload, padded, ffi.NULL, 0, ffi.NULL, self._nonce_pointer, keypair.send_key_pointer
        )
        return bytes(buffer[: _HEADER_SIZE + padded + _TAG_SIZE])

    def open(self, keypair: Keypair, counter: int, message: bytes) -> bytes | None:
        """The padded plaintext of the transport `message`, or None when it does not authenticate."""
        ciphertext_length = len(message) - _HEADER_SIZE
        if ciphertext_length > MAX_PACKET_SIZE + _TAG_SIZE:
            return None
        _NONCE_COUNTER.pack_into(self._nonce, _NONCE_COUNTER_OFFSET, counter)
        status = lib.crypto_aead_chacha20poly1305_ietf_decrypt(
            self._opened_pointer,
            ffi.NULL,
            ffi.NULL,
            ffi.from_buffer(message) + _HEADER_SIZE,
            ciphertext_length,
            ffi.NULL,
            0,
            self._nonce_pointer,
            keypair.receive_key_pointer,
        )
        if status != 0:
            return None
        return bytes(self._opened_view[: ciphertext_length - _TAG_SIZE])
