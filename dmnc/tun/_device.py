"""The TUN device interface shared by every backend (see dmnc.tun)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol


class TunError(Exception):
    """Opening, configuring, reading or writing a TUN device failed; the message names the device and the cause."""


@dataclass(frozen=True, slots=True)
class TunAddress:
    """An address for the TUN interface; with `peer`, point-to-point (`local` is ours, `peer` the far end)."""

    local: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None


class TunDevice(Protocol):
    """An open, configured TUN interface."""

    @property
    def name(self) -> str: ...

    @property
    def mtu(self) -> int: ...

    def fileno(self) -> int:
        """The non-blocking descriptor to wait on for readability."""
        ...

    def read_packet(self) -> bytes | None:
        """The next IP packet from the kernel, or None when none is queued. Raises TunError."""
        ...

    def write_packet(self, packet: bytes) -> bool:
        """Hand an IP packet to the kernel; False when its queue is full and the packet was dropped.

        Raises TunError.
        """
        ...

    def close(self) -> None: ...
