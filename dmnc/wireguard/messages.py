"""Wire formats of whitepaper 5.4: handshake initiation, handshake response, cookie reply, transport data.

Every `parse_untrusted` takes raw network bytes and either returns a message or raises `MessageError` (nothing else),
so the device can turn any malformed input into a counted drop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Self

from dmnc.wireguard import constants
from dmnc.wireguard.outputs import DropReason

_INITIATION: Final = struct.Struct("<II32s48s28s16s16s")
_RESPONSE: Final = struct.Struct("<III32s16s16s16s")
_COOKIE_REPLY: Final = struct.Struct("<II24s32s")
TRANSPORT_HEADER: Final = struct.Struct("<IIQ")

# Offsets of the two MACs: mac1 covers everything before it, mac2 everything before mac2 (whitepaper 5.4.4).
INITIATION_MAC1_OFFSET: Final = constants.INITIATION_SIZE - 2 * constants.MAC_SIZE
RESPONSE_MAC1_OFFSET: Final = constants.RESPONSE_SIZE - 2 * constants.MAC_SIZE


class MessageError(ValueError):
    """Bytes that are not a well-formed message of the expected type; `reason` is the drop it maps to."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def message_type_untrusted(data: bytes) -> int:
    """The message type of a datagram: its first byte, with the three reserved bytes required to be zero."""
    if len(data) < 4:
        raise MessageError(DropReason.TOO_SHORT, f"{len(data)} bytes is shorter than a message type")
    kind: int = struct.unpack_from("<I", data)[0]
    if kind not in (
        constants.MESSAGE_INITIATION,
        constants.MESSAGE_RESPONSE,
        constants.MESSAGE_COOKIE_REPLY,
        constants.MESSAGE_TRANSPORT,
    ):
        raise MessageError(DropReason.UNKNOWN_TYPE, f"unknown message type {kind:#010x}")
    return kind


def _check(data: bytes, kind: int, size: int, name: str) -> None:
    if len(data) != size:
        raise MessageError(DropReason.BAD_LENGTH, f"{name} is {size} bytes, got {len(data)}")
    if struct.unpack_from("<I", data)[0] != kind:
        raise MessageError(DropReason.UNKNOWN_TYPE, f"not a {name}")


@dataclass(frozen=True, slots=True)
class Initiation:
    """Handshake initiation (type 1, 148 bytes)."""

    sender: int
    ephemeral: bytes  # 32
    encrypted_static: bytes  # 32 + 16
    encrypted_timestamp: bytes  # 12 + 16
    mac1: bytes = bytes(constants.MAC_SIZE)
    mac2: bytes = bytes(constants.MAC_SIZE)

    def pack(self) -> bytes:
        return _INITIATION.pack(
            constants.MESSAGE_INITIATION,
            self.sender,
            self.ephemeral,
            self.encrypted_static,
            self.encrypted_timestamp,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def parse_untrusted(cls, data: bytes) -> Self:
        _check(data, constants.MESSAGE_INITIATION, constants.INITIATION_SIZE, "handshake initiation")
        _, sender, ephemeral, static, timestamp, mac1, mac2 = _INITIATION.unpack(data)
        return cls(sender, ephemeral, static, timestamp, mac1, mac2)


@dataclass(frozen=True, slots=True)
class Response:
    """Handshake response (type 2, 92 bytes)."""

    sender: int
    receiver: int
    ephemeral: bytes  # 32
    encrypted_nothing: bytes  # 0 + 16
    mac1: bytes = bytes(constants.MAC_SIZE)
    mac2: bytes = bytes(constants.MAC_SIZE)

    def pack(self) -> bytes:
        return _RESPONSE.pack(
            constants.MESSAGE_RESPONSE,
            self.sender,
            self.receiver,
            self.ephemeral,
            self.encrypted_nothing,
            self.mac1,
            self.mac2,
        )

    @classmethod
    def parse_untrusted(cls, data: bytes) -> Self:
        _check(data, constants.MESSAGE_RESPONSE, constants.RESPONSE_SIZE, "handshake response")
        _, sender, receiver, ephemeral, nothing, mac1, mac2 = _RESPONSE.unpack(data)
        return cls(sender, receiver, ephemeral, nothing, mac1, mac2)


@dataclass(frozen=True, slots=True)
class CookieReply:
    """Cookie reply (type 3, 64 bytes)."""

    receiver: int
    nonce: bytes  # 24
    encrypted_cookie: bytes  # 16 + 16

    def pack(self) -> bytes:
        return _COOKIE_REPLY.pack(constants.MESSAGE_COOKIE_REPLY, self.receiver, self.nonce, self.encrypted_cookie)

    @classmethod
    def parse_untrusted(cls, data: bytes) -> Self:
        _check(data, constants.MESSAGE_COOKIE_REPLY, constants.COOKIE_REPLY_SIZE, "cookie reply")
        _, receiver, nonce, cookie = _COOKIE_REPLY.unpack(data)
        return cls(receiver, nonce, cookie)


@dataclass(frozen=True, slots=True)
class Transport:
    """Transport data (type 4): header plus the encrypted, padded packet with its tag (at least 16 bytes)."""

    receiver: int
    counter: int
    encrypted_packet: bytes

    def pack(self) -> bytes:
        return TRANSPORT_HEADER.pack(constants.MESSAGE_TRANSPORT, self.receiver, self.counter) + self.encrypted_packet

    @classmethod
    def parse_untrusted(cls, data: bytes) -> Self:
        if len(data) < constants.TRANSPORT_MIN_SIZE:
            raise MessageError(DropReason.TOO_SHORT, f"transport data is at least {constants.TRANSPORT_MIN_SIZE} bytes")
        kind, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
        if kind != constants.MESSAGE_TRANSPORT:
            raise MessageError(DropReason.UNKNOWN_TYPE, "not transport data")
        return cls(receiver, counter, bytes(data[constants.TRANSPORT_HEADER_SIZE :]))
