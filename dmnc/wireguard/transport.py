"""The data fast path (whitepaper 5.4.6): ChaCha20-Poly1305 of transport packets into preallocated buffers.

libsodium is called through PyNaCl's cffi `lib` directly: PyNaCl's public wrapper allocates and copies per call and
costs several times more (tests/bench/bench_core.py). One `TransportCipher` belongs to one Device and is used
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


_NULL: Final = ffi.NULL
_encrypt: Final = lib.crypto_aead_chacha20poly1305_ietf_encrypt
_decrypt: Final = lib.crypto_aead_chacha20poly1305_ietf_decrypt


class TransportCipher:
    """Seals IP packets into transport messages and opens them, reusing the same buffers for every packet."""

    __slots__ = (
        "_mtu",
        "_nonce",
        "_nonce_pointer",
        "_opened_pointer",
        "_opened_view",
        "_payload_pointer",
        "_sealed",
        "_sealed_view",
    )

    def __init__(self, mtu: int) -> None:
        self._mtu = mtu
        self._sealed = bytearray(_HEADER_SIZE + MAX_PACKET_SIZE + constants.PADDING_MULTIPLE + _TAG_SIZE)
        self._sealed_view = memoryview(self._sealed)
        self._payload_pointer: Any = ffi.from_buffer(self._sealed) + _HEADER_SIZE
        opened = bytearray(MAX_PACKET_SIZE + constants.PADDING_MULTIPLE)
        self._opened_view = memoryview(opened)
        self._opened_pointer: Any = ffi.from_buffer(opened)
        self._nonce = bytearray(12)
        self._nonce_pointer: Any = ffi.from_buffer(self._nonce)

    def seal(self, keypair: Keypair, counter: int, packet: bytes) -> bytes:
        """The complete transport message carrying `packet` (len <= MAX_PACKET_SIZE) under `counter`."""
        length = len(packet)
        mtu = self._mtu
        # Zero padding to a multiple of 16, never past the MTU (whitepaper 5.4.6, wireguard-go send.go).
        padded = length if length >= mtu else min((length + 15) & -16, mtu)
        buffer = self._sealed_view
        _HEADER.pack_into(self._sealed, 0, constants.MESSAGE_TRANSPORT, keypair.remote_index, counter)
        _NONCE_COUNTER.pack_into(self._nonce, _NONCE_COUNTER_OFFSET, counter)
        payload = self._payload_pointer
        if padded == length:
            # cffi hands libsodium a pointer to the bytes' own data: no copy of the plaintext.
            _encrypt(payload, _NULL, packet, length, _NULL, 0, _NULL, self._nonce_pointer, keypair.send_key_pointer)
        else:
            buffer[_HEADER_SIZE : _HEADER_SIZE + length] = packet
            buffer[_HEADER_SIZE + length : _HEADER_SIZE + padded] = _ZERO_PADDING[: padded - length]
            # In-place encryption (message and ciphertext at the same address) is supported by libsodium.
            _encrypt(payload, _NULL, payload, padded, _NULL, 0, _NULL, self._nonce_pointer, keypair.send_key_pointer)
        return bytes(buffer[: _HEADER_SIZE + padded + _TAG_SIZE])

    def open(self, keypair: Keypair, counter: int, message: bytes) -> bytes | None:
        """The padded plaintext of the transport `message`, or None when it does not authenticate."""
        ciphertext_length = len(message) - _HEADER_SIZE
        if ciphertext_length > MAX_PACKET_SIZE + _TAG_SIZE:
            return None
        _NONCE_COUNTER.pack_into(self._nonce, _NONCE_COUNTER_OFFSET, counter)
        # cffi passes a bytes argument to libsodium as a pointer to its data; slicing off the header is one memcpy,
        # measured cheaper than wrapping the message with ffi.from_buffer.
        status = _decrypt(
            self._opened_pointer,
            _NULL,
            _NULL,
            message[_HEADER_SIZE:],
            ciphertext_length,
            _NULL,
            0,
            self._nonce_pointer,
            keypair.receive_key_pointer,
        )
        if status != 0:
            return None
        return bytes(self._opened_view[: ciphertext_length - _TAG_SIZE])
