"""The data-path cipher: padding rules (multiple of 16, capped at the MTU), round trips, rejection of forgeries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.wireguard import Timing
from dmnc.wireguard.session import Keypair
from dmnc.wireguard.transport import TransportCipher


def keypair(send: bytes, receive: bytes) -> Keypair:
    return Keypair(send, receive, is_initiator=True, local_index=1, remote_index=2, created=0.0, timing=Timing())


SENDER = keypair(bytes([1]) * 32, bytes([2]) * 32)
RECEIVER = keypair(bytes([2]) * 32, bytes([1]) * 32)


@pytest.mark.parametrize(
    ("length", "padded"),
    [(0, 0), (1, 16), (16, 16), (17, 32), (1400, 1408), (1410, 1420), (1419, 1420), (1420, 1420), (1500, 1500)],
)
def test_padding_to_16_never_past_the_mtu(length: int, padded: int) -> None:
    sealed = TransportCipher(mtu=1420).seal(SENDER, 0, bytes(length))
    assert len(sealed) == 16 + padded + 16


@given(st.binary(max_size=2000), st.integers(0, 2**64 - 1))
def test_round_trip_returns_the_padded_plaintext(packet: bytes, counter: int) -> None:
    cipher = TransportCipher(mtu=1420)
    sealed = cipher.seal(SENDER, counter, packet)
    assert sealed[:4] == b"\x04\x00\x00\x00"
    assert int.from_bytes(sealed[4:8], "little") == SENDER.remote_index
    assert int.from_bytes(sealed[8:16], "little") == counter
    opened = cipher.open(RECEIVER, counter, sealed)
    assert opened is not None
    assert opened[: len(packet)] == packet
    assert opened[len(packet) :] == bytes(len(opened) - len(packet))


def test_open_rejects_a_flipped_bit_a_wrong_counter_and_the_wrong_key() -> None:
    cipher = TransportCipher(mtu=1420)
    sealed = cipher.seal(SENDER, 7, b"secret")
    flipped = sealed[:20] + bytes([sealed[20] ^ 1]) + sealed[21:]
    assert cipher.open(RECEIVER, 7, flipped) is None
    assert cipher.open(RECEIVER, 8, sealed) is None
    assert cipher.open(SENDER, 7, sealed) is None


def test_zeroed_keypair_no_longer_opens_its_packets() -> None:
    cipher = TransportCipher(mtu=1420)
    receiver = keypair(bytes([2]) * 32, bytes([1]) * 32)
    sealed = cipher.seal(SENDER, 0, b"before")
    receiver.zero()
    assert cipher.open(receiver, 0, sealed) is None


def test_open_rejects_a_message_larger_than_any_ip_packet() -> None:
    assert TransportCipher(mtu=1420).open(RECEIVER, 0, bytes(16 + 65535 + 16 + 1)) is None
