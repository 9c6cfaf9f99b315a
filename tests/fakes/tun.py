"""An in-memory TUN for tests: a datagram socketpair, so it is a real non-blocking fd trio can wait on.

The tunnel reads and writes the device end (`FakeTun`, a `TunDevice`); the test plays the kernel on the other end
with `inject` (a packet the kernel would route into the tunnel) and `take_written` (packets the tunnel delivered).
"""

from __future__ import annotations

import socket

from dmnc.tun._device import TunError
from dmnc.wireguard.constants import DEFAULT_MTU

_MAX_PACKET = 65535


class FakeTun:
    def __init__(self, name: str = "fake0", mtu: int = DEFAULT_MTU) -> None:
        self._name = name
        self._mtu = mtu
        self._device, self.kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._device.setblocking(False)
        self.kernel.setblocking(False)

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu(self) -> int:
        return self._mtu

    def fileno(self) -> int:
        return self._device.fileno()

    def read_packet(self) -> bytes | None:
        try:
            return self._device.recv(_MAX_PACKET)
        except BlockingIOError:
            return None
        except OSError as error:
            raise TunError(f"reading from {self._name}: {error}") from error

    def write_packet(self, packet: bytes) -> bool:
        try:
            self._device.send(packet)
        except BlockingIOError:
            return False
        except OSError as error:
            raise TunError(f"writing to {self._name}: {error}") from error
        return True

    def close(self) -> None:
        self._device.close()
        self.kernel.close()

    def inject(self, packet: bytes) -> None:
        """Queue `packet` as if the kernel routed it into the tunnel interface."""
        self.kernel.send(packet)

    def take_written(self) -> list[bytes]:
        """Every packet the tunnel has written to the device so far, oldest first."""
        packets = []
        while True:
            try:
                packets.append(self.kernel.recv(_MAX_PACKET))
            except BlockingIOError:
                return packets
