"""Linux TUN: /dev/net/tun (IFF_TUN | IFF_NO_PI), configured over rtnetlink.

Numbers from `linux/if_tun.h` (TUNSETIFF = _IOW('T', 202, int), IFF_TUN, IFF_NO_PI) and `linux/if.h` (struct ifreq:
16-byte name then a union whose first member, ifr_flags, is a short; 40 bytes on 64-bit).
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import socket
import struct
from collections import Counter
from collections.abc import Sequence

from dmnc import netlink
from dmnc.tun._device import TunAddress, TunError
from dmnc.tun.rtnetlink import encode_add_address, encode_link_settings, encode_no_link_local
from dmnc.wireguard.constants import DEFAULT_MTU

TUN_CLONE_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000  # no 4-byte packet information header: reads and writes are bare IP packets
IFREQ = struct.Struct("16sH22x")
IFNAMSIZ = 16
# A TUN read returns one whole packet; a buffer of the largest IP packet means no MTU change can truncate one.
MAX_PACKET = 65535
_NETLINK_TIMEOUT_SECONDS = 5.0
# Present when the kernel has IPv6 (ipv6(7)); per-interface settings live below conf/NAME.
_IPV6_SYSCTL = "/proc/sys/net/ipv6"
# Holds any reply to a request (an acknowledgement, or an error with extended attributes).
_NETLINK_RECEIVE_BYTES = 65536


class LinuxTun:
    """An open /dev/net/tun queue attached to interface `name`; closing it deletes the interface."""

    def __init__(self, fd: int, name: str, mtu: int) -> None:
        self._fd = fd
        self._name = name
        self._mtu = mtu
        self._buffer = bytearray(MAX_PACKET)
        self._view = memoryview(self._buffer)

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu(self) -> int:
        return self._mtu

    def fileno(self) -> int:
        return self._fd

    def read_packet(self) -> bytes | None:
        try:
            length = os.readv(self._fd, (self._buffer,))
        except BlockingIOError:
            return None
        except OSError as error:
            raise TunError(f"reading from {self._name}: {error.strerror}") from error
        return bytes(self._view[:length])

    def write_packet(self, packet: bytes) -> bool:
        try:
            os.write(self._fd, packet)
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno == errno.EINVAL:
                # The kernel rejects a malformed IP packet (bad version nibble, short header): a counted drop upstream.
                return False
            raise TunError(f"writing to {self._name}: {error.strerror}") from error
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_linux_tun(name: str | None, *, mtu: int = DEFAULT_MTU, addresses: Sequence[TunAddress] = ()) -> LinuxTun:
    """Create (or attach to) TUN interface `name` (default `dmnc%d`), set addresses and MTU, bring it up."""
    requested = (name or "dmnc%d").encode()
    if len(requested) >= IFNAMSIZ:
        raise TunError(f"interface name {name!r} is longer than {IFNAMSIZ - 1} characters")
    try:
        fd = os.open(TUN_CLONE_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise TunError(f"opening {TUN_CLONE_DEVICE}: {error.strerror}") from error
    try:
        request = bytearray(IFREQ.pack(requested, IFF_TUN | IFF_NO_PI))
        fcntl.ioctl(fd, TUNSETIFF, request)
        actual_name = IFREQ.unpack(request)[0].rstrip(b"\0").decode()
        configure_interface(actual_name, mtu=mtu, addresses=addresses)
    except OSError as error:
        os.close(fd)
        raise TunError(f"creating TUN interface {requested.decode()!r}: {error.strerror}") from error
    except TunError:
        os.close(fd)
        raise
    return LinuxTun(fd, actual_name, mtu)


def configure_interface(name: str, *, mtu: int, addresses: Sequence[TunAddress]) -> None:
    """Addresses, MTU and IFF_UP for interface `name` in the current network namespace, over rtnetlink."""
    try:
        index = socket.if_nametoindex(name)
    except OSError as error:
        raise TunError(f"interface {name} vanished before it was configured: {error.strerror}") from error
    sequence = itertools.count(1)
    requests = []
    if os.path.isdir(_IPV6_SYSCTL):
        # The host takes no orders through the tunnel: no link-local address (so no RS or MLD of its own) and no
        # router advertisements accepted, set before the link is up (the flow filter drops RAs too).
        seq = next(sequence)
        requests.append((f"turning off link-local addresses on {name}", seq, encode_no_link_local(index, seq)))
        ignore_router_advertisements(name)
    requests += [
        (
            f"adding address {address.local} to {name}",
            seq := next(sequence),
            encode_add_address(index, seq, address.local, address.peer),
        )
        for address in addresses
    ]
    seq = next(sequence)
    requests.append(
        (f"setting MTU {mtu} and link up on {name}", seq, encode_link_settings(index, seq, mtu=mtu, up=True))
    )
    try:
        with socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, netlink.NETLINK_ROUTE
        ) as request_socket:
            request_socket.settimeout(_NETLINK_TIMEOUT_SECONDS)
            for what, seq, message in requests:
                request_acknowledged(request_socket, seq, message, what)
    except OSError as error:
        raise TunError(f"configuring {name} over rtnetlink: {error.strerror or error}") from error


def ignore_router_advertisements(name: str) -> None:
    """accept_ra=0 on `name` (Documentation/networking/ip-sysctl.rst): router advertisements arriving on it
    configure nothing, whatever the global default says."""
    try:
        with open(f"{_IPV6_SYSCTL}/conf/{name}/accept_ra", "w", encoding="ascii") as setting:
            setting.write("0\n")
    except OSError as error:
        raise TunError(f"setting accept_ra=0 on {name}: {error.strerror or error}") from error


def request_acknowledged(request_socket: socket.socket, seq: int, message: bytes, what: str) -> None:
    request_socket.send(message)
    while True:
        drops: Counter[str] = Counter()
        replies = netlink.decode_messages_untrusted(
            request_socket.recv(_NETLINK_RECEIVE_BYTES), netlink.NO_PAYLOADS, drops
        )
        if drops:
            raise TunError(f"{what}: malformed netlink reply ({', '.join(sorted(drops))})")
        for reply in replies:
            if not isinstance(reply, netlink.ErrorMessage) or reply.seq != seq:
                continue
            if reply.error:
                raise TunError(f"{what}: {os.strerror(-reply.error)}")
            return
