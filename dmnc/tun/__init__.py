"""TUN devices: one small interface (`TunDevice`), one backend per platform, picked once by `open_tun`.

A TUN device carries bare IP packets (IPv4 and IPv6) between the kernel's network stack and this process. Every
backend is non-blocking: `read_packet` returns None when nothing is queued, so the data path can drain a bounded
batch per wakeup and wait on `fileno()` with `trio.lowlevel.wait_readable`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from dmnc.tun._device import TunAddress, TunDevice, TunError
from dmnc.tun.darwin import open_utun
from dmnc.tun.linux import open_linux_tun
from dmnc.wireguard.constants import DEFAULT_MTU

__all__ = ["TunAddress", "TunDevice", "TunError", "open_tun"]

_OPENERS: dict[str, Callable[..., TunDevice]] = {"linux": open_linux_tun, "darwin": open_utun}


def open_tun(name: str | None = None, *, mtu: int = DEFAULT_MTU, addresses: Sequence[TunAddress] = ()) -> TunDevice:
    """Create a TUN interface for this platform with `addresses`, `mtu`, and the link up. Raises TunError.

    `name` is a Linux interface name (may contain `%d`) or a macOS `utunN`; None lets the system pick.
    """
    opener = _OPENERS.get(sys.platform)
    if opener is None:
        raise TunError(f"TUN devices are not supported on {sys.platform}")
    return opener(name, mtu=mtu, addresses=addresses)
