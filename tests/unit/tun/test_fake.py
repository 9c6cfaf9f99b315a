from __future__ import annotations

from tests.fakes.tun import FakeTun


def test_fake_tun_passes_whole_packets_both_ways_and_never_blocks() -> None:
    tun = FakeTun()
    try:
        assert tun.read_packet() is None
        tun.inject(b"\x45" + bytes(19))
        tun.inject(b"\x60" + bytes(39))
        assert tun.read_packet() == b"\x45" + bytes(19)
        assert tun.read_packet() == b"\x60" + bytes(39)
        assert tun.read_packet() is None
        assert tun.write_packet(b"reply")
        assert tun.take_written() == [b"reply"]
        assert tun.take_written() == []
    finally:
        tun.close()
