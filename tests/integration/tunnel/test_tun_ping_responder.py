"""The ICMP responder used by the TUN ping tests (Linux lab, macOS CI) builds replies a kernel accepts."""

from __future__ import annotations

import struct

from dmnc.supervisor.echo_probe import internet_checksum
from tests.integration.tunnel.tun_ping_responder import echo_reply


def test_echo_reply_of_the_responder_script_is_valid_icmp() -> None:
    request_icmp = bytes([8, 0, 0, 0, 0, 1, 0, 1]) + b"payload!"
    request_icmp = request_icmp[:2] + struct.pack("!H", internet_checksum(request_icmp)) + request_icmp[4:]
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(request_icmp), 1, 0, 64, 1, 0,
                                   bytes([198, 51, 100, 1]), bytes([198, 51, 100, 2])))  # fmt: skip
    header[10:12] = struct.pack("!H", internet_checksum(bytes(header)))
    reply = echo_reply(bytes(header) + request_icmp)
    assert reply is not None
    assert reply[12:16] == bytes([198, 51, 100, 2])
    assert reply[16:20] == bytes([198, 51, 100, 1])
    assert reply[20] == 0
    assert internet_checksum(reply[:20]) == 0
    assert internet_checksum(reply[20:]) == 0
    assert echo_reply(reply) is None
