"""A utun write that fails transiently drops that packet, as on Linux; only a lasting failure stops the tunnel.

DarwinUtun runs here over a socket whose sendmsg fails as xnu's socket layer does under memory pressure.
"""

from __future__ import annotations

import errno
import socket

import pytest

from dmnc.tun import TunError
from dmnc.tun.darwin import DarwinUtun

IPV4_PACKET = bytes([0x45]) + bytes(19)


class FailingSocket(socket.socket):
    """A datagram socket whose every sendmsg fails with `code`."""

    def __init__(self, code: int) -> None:
        super().__init__(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.code = code

    def sendmsg(self, *_: object) -> int:
        raise OSError(self.code, "simulated")


@pytest.mark.parametrize("code", [errno.ENOBUFS, errno.ENOMEM, errno.EINVAL, errno.EAGAIN])
def test_a_transient_write_error_is_a_dropped_packet(code: int) -> None:
    utun = DarwinUtun(FailingSocket(code), "utun9", 1420)
    try:
        assert utun.write_packet(IPV4_PACKET) is False
    finally:
        utun.close()


@pytest.mark.parametrize("code", [errno.ENXIO, errno.EIO, errno.EBADF])
def test_a_lasting_write_error_stops_the_tunnel_with_a_clear_message(code: int) -> None:
    utun = DarwinUtun(FailingSocket(code), "utun9", 1420)
    try:
        with pytest.raises(TunError, match="writing to utun9"):
            utun.write_packet(IPV4_PACKET)
    finally:
        utun.close()
