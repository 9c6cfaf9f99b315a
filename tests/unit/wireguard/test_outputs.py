"""The output values keep the dataclass promises (frozen, equality, matching) despite their fast constructors."""

from __future__ import annotations

import dataclasses

import pytest

from dmnc.wireguard import Drop, DropReason, Output, SendDatagram, WriteTunnel


def test_outputs_are_frozen() -> None:
    datagram = SendDatagram(("192.0.2.1", 51820), b"data")
    packet = WriteTunnel(b"packet")
    with pytest.raises(dataclasses.FrozenInstanceError):
        datagram.data = b"other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        packet.packet = b"other"  # type: ignore[misc]


def test_outputs_compare_hash_and_match_by_value() -> None:
    assert SendDatagram(("::1", 1), b"x") == SendDatagram(("::1", 1), b"x")
    assert SendDatagram(("::1", 1), b"x") != SendDatagram(("::1", 2), b"x")
    assert hash(WriteTunnel(b"p")) == hash(WriteTunnel(b"p"))
    outputs: list[Output] = [SendDatagram(("::1", 1), b"x"), WriteTunnel(b"p"), Drop(DropReason.TOO_SHORT)]
    seen: list[tuple[object, ...]] = []
    for output in outputs:
        match output:
            case SendDatagram(endpoint, data):
                seen.append(("send", endpoint, data))
            case WriteTunnel(packet):
                seen.append(("tunnel", packet))
            case Drop(reason):
                seen.append(("drop", reason))
    assert seen == [("send", ("::1", 1), b"x"), ("tunnel", b"p"), ("drop", DropReason.TOO_SHORT)]
    assert repr(WriteTunnel(b"p")) == "WriteTunnel(packet=b'p')"
