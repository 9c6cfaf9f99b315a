"""macOS utun: a PF_SYSTEM control socket, configured with the classic interface ioctls.

Every number and layout here is from xnu (apple-oss-distributions/xnu, macOS 13-15): bsd/net/if_utun.h,
bsd/sys/kern_control.h, bsd/sys/sys_domain.h, bsd/sys/sockio.h, bsd/net/if.h, bsd/netinet6/in6_var.h. Darwin's
address family numbers differ from Linux's (AF_INET6 is 30), so they are spelled out rather than taken from
`socket`. The byte builders are pure functions, unit-tested on Linux against those values.

Router advertisements: a utun configured this way processes none, so nothing needs turning off here (Linux needs
accept_ra=0, dmnc.tun.linux). xnu's nd6_ra_input() (bsd/netinet6/nd6_rtr.c) discards an RA unless the interface
has IFEF_ACCEPT_RTADV (bsd/net/if_var.h), and only SIOCAUTOCONF_START (in6ctl_autoconf(), bsd/netinet6/in6.c) sets
it: what configd issues for an interface set to configure IPv6 "Automatically". dmnc only adds addresses with
SIOCAIFADDR_IN6 and never starts autoconfiguration. The flow filter drops RAs and redirects before the TUN anyway.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Sequence

from dmnc.tun._device import TunAddress, TunError
from dmnc.wireguard.constants import DEFAULT_MTU

# bsd/sys/socket.h, bsd/sys/sys_domain.h, bsd/net/if_utun.h
AF_SYSTEM = 32
SYSPROTO_CONTROL = 2
UTUN_CONTROL_NAME = "com.apple.net.utun_control"
UTUN_OPT_IFNAME = 2
DARWIN_AF_INET = 2
DARWIN_AF_INET6 = 30
# bsd/sys/kern_control.h: CTLIOCGINFO = _IOWR('N', 3, struct ctl_info); ctl_info = u32 ctl_id, char ctl_name[96].
CTLIOCGINFO = 0xC0644E03
CTL_INFO = struct.Struct("=I96s")
# bsd/sys/sockio.h, bsd/netinet6/in6_var.h
SIOCSIFFLAGS = 0x80206910
SIOCGIFFLAGS = 0xC0206911
SIOCSIFMTU = 0x80206934
SIOCAIFADDR = 0x8040691A
SIOCAIFADDR_IN6 = 0x8080691A
IFF_UP = 0x1
# bsd/net/if.h: struct ifreq is 32 bytes, name[16] then a union (ifr_flags is a short on Apple, ifr_mtu an int).
IFREQ_FLAGS = struct.Struct("=16sH14x")  # unsigned: IFF_MULTICAST 0x8000 is the sign bit
IFREQ_MTU = struct.Struct("=16si12x")
IFNAMSIZ = 16
# bsd/netinet6/nd6.h ND6_INFINITE_LIFETIME: an address that never expires.
ND6_INFINITE_LIFETIME = 0xFFFFFFFF
# in6_aliasreq tail: int ifra_flags @100, then in6_addrlifetime {time_t expire, time_t preferred, u32 vltime, pltime}.
IN6_ALIASREQ_TAIL = struct.Struct("=iqqII")

# Every packet through a utun socket starts with the protocol family, big-endian (if_utun.c utun_output / framer).
FAMILY_HEADER_INET = struct.pack(">I", DARWIN_AF_INET)
FAMILY_HEADER_INET6 = struct.pack(">I", DARWIN_AF_INET6)
FAMILY_HEADER_LENGTH = 4
_MAX_PACKET = 65535 + FAMILY_HEADER_LENGTH
# Errors of one write that drop that packet only, as on Linux: xnu's utun input path never fails a packet it
# accepted (bsd/net/if_utun.c utun_ctl_send -> utun_pkt_input returns 0 and counts errors), so what reaches
# sendmsg comes from the socket layer: ENOBUFS/ENOMEM when sosend cannot allocate mbufs under memory pressure
# (bsd/kern/uipc_socket.c), EINVAL for a packet the kernel refuses. Dropping keeps the tunnel up; the data path
# counts the drop.
DROPPED_WRITE_ERRNOS = frozenset({errno.ENOBUFS, errno.ENOMEM, errno.EINVAL})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def ctl_info_request(control_name: str = UTUN_CONTROL_NAME) -> bytearray:
    """The CTLIOCGINFO argument: ctl_id 0 (filled in by the kernel) and the control's name."""
    return bytearray(CTL_INFO.pack(0, control_name.encode()))


def utun_unit(name: str) -> int:
    """The sc_unit that creates `utunN`: N + 1, because unit 0 asks the kernel to pick (if_utun.c)."""
    if not name.startswith("utun") or not name[4:].isdigit():
        raise TunError(f"macOS tunnel interfaces are named utunN, not {name!r}")
    return int(name[4:]) + 1


def family_header(packet: bytes) -> bytes:
    """The 4-byte header for an outgoing packet, chosen by its IP version nibble as wireguard-go does."""
    return FAMILY_HEADER_INET6 if packet and packet[0] >> 4 == 6 else FAMILY_HEADER_INET


def sockaddr_in(address: ipaddress.IPv4Address, family: int = DARWIN_AF_INET) -> bytes:
    """struct sockaddr_in, 16 bytes: sin_len, sin_family, port, address, 8 zero bytes."""
    return struct.pack("=BBH4s8x", 16, family, 0, address.packed)


def sockaddr_in6(address: ipaddress.IPv6Address) -> bytes:
    """struct sockaddr_in6, 28 bytes: sin6_len, sin6_family, port, flowinfo, address, scope id."""
    return struct.pack("=BBHI16sI", 28, DARWIN_AF_INET6, 0, 0, address.packed, 0)


def ifreq_flags(name: str, flags: int) -> bytearray:
    return bytearray(IFREQ_FLAGS.pack(name.encode(), flags))


def ifreq_mtu(name: str, mtu: int) -> bytearray:
    return bytearray(IFREQ_MTU.pack(name.encode(), mtu))


def ifaliasreq(name: str, local: ipaddress.IPv4Interface, peer: ipaddress.IPv4Address | None) -> bytes:
    """struct ifaliasreq (64 B) for SIOCAIFADDR: on a point-to-point link ifra_broadaddr holds the peer.

    Without a peer the local address is its own destination, as wg-quick does (`ifconfig utunN inet A/N A alias`,
    wireguard-tools src/wg-quick/darwin.bash): xnu's in_ifinit installs no route at all for an AF_INET address on
    a point-to-point interface whose destination is not AF_INET (bsd/netinet/in.c), and the address's network
    gets its route from the caller (an interface route, as wg-quick adds). The mask is written as ifconfig does
    (network_cmds af_inet.c): sin_len 16, family 0.
    """
    mask = ipaddress.IPv4Address(0xFFFFFFFF if peer is not None else int(local.network.netmask))
    far_end = sockaddr_in(peer if peer is not None else local.ip)
    return name.encode().ljust(IFNAMSIZ, b"\0") + sockaddr_in(local.ip) + far_end + sockaddr_in(mask, family=0)


def in6_aliasreq(name: str, local: ipaddress.IPv6Interface, peer: ipaddress.IPv6Address | None) -> bytes:
    """struct in6_aliasreq (128 B) for SIOCAIFADDR_IN6, never-expiring lifetimes.

    The kernel wants prefix length 128 when a destination is given on a point-to-point interface (in6.c).
    """
    prefix_length = 128 if peer is not None else local.network.prefixlen
    prefix_mask = ipaddress.IPv6Network(("::", prefix_length)).netmask
    destination = sockaddr_in6(peer) if peer is not None else bytes(28)
    return (
        name.encode().ljust(IFNAMSIZ, b"\0")
        + sockaddr_in6(local.ip)
        + destination
        + sockaddr_in6(prefix_mask)
        + IN6_ALIASREQ_TAIL.pack(0, 0, 0, ND6_INFINITE_LIFETIME, ND6_INFINITE_LIFETIME)
    )


class DarwinUtun:
    """A connected utun control socket; closing it destroys the interface."""

    def __init__(self, control: socket.socket, name: str, mtu: int) -> None:
        self._control = control
        self._name = name
        self._mtu = mtu
        self._buffer = bytearray(_MAX_PACKET)
        self._view = memoryview(self._buffer)

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu(self) -> int:
        return self._mtu

    def fileno(self) -> int:
        return self._control.fileno()

    def read_packet(self) -> bytes | None:
        try:
            length = self._control.recv_into(self._buffer)
        except BlockingIOError:
            return None
        except OSError as error:
            raise TunError(f"reading from {self._name}: {error.strerror}") from error
        if length <= FAMILY_HEADER_LENGTH:
            return None
        return bytes(self._view[FAMILY_HEADER_LENGTH:length])

    def write_packet(self, packet: bytes) -> bool:
        try:
            self._control.sendmsg((family_header(packet), packet))
        except BlockingIOError:
            return False
        except OSError as error:
            if error.errno in DROPPED_WRITE_ERRNOS:
                return False
            raise TunError(f"writing to {self._name}: {error.strerror}") from error
        return True

    def close(self) -> None:
        self._control.close()


def open_utun(name: str | None, *, mtu: int = DEFAULT_MTU, addresses: Sequence[TunAddress] = ()) -> DarwinUtun:
    """Create utunN (`name`, or the first free one), add `addresses`, set `mtu`, bring it up."""
    try:
        control = socket.socket(AF_SYSTEM, socket.SOCK_DGRAM, SYSPROTO_CONTROL)
    except OSError as error:
        raise TunError(f"opening a utun control socket: {error.strerror}") from error
    try:
        if name is None:
            # CPython resolves the control name with CTLIOCGINFO itself and connects unit 0 (kernel picks).
            control.connect(UTUN_CONTROL_NAME)
        else:
            info = ctl_info_request()
            fcntl.ioctl(control.fileno(), CTLIOCGINFO, info)
            control.connect((CTL_INFO.unpack(info)[0], utun_unit(name)))
        actual_name = control.getsockopt(SYSPROTO_CONTROL, UTUN_OPT_IFNAME, IFNAMSIZ).split(b"\0")[0].decode()
        control.setblocking(False)
        _configure(actual_name, mtu, addresses)
    except OSError as error:
        control.close()
        raise TunError(f"creating utun interface {name or '(any)'}: {error.strerror or error}") from error
    except TunError:
        control.close()
        raise
    return DarwinUtun(control, actual_name, mtu)


def _configure(name: str, mtu: int, addresses: Sequence[TunAddress]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as inet:
        for address in addresses:
            if isinstance(address.local, ipaddress.IPv4Interface):
                peer4 = address.peer if isinstance(address.peer, ipaddress.IPv4Address) else None
                fcntl.ioctl(inet.fileno(), SIOCAIFADDR, ifaliasreq(name, address.local, peer4))
            else:
                peer6 = address.peer if isinstance(address.peer, ipaddress.IPv6Address) else None
                with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as inet6:
                    fcntl.ioctl(inet6.fileno(), SIOCAIFADDR_IN6, in6_aliasreq(name, address.local, peer6))
        fcntl.ioctl(inet.fileno(), SIOCSIFMTU, ifreq_mtu(name, mtu))
        flags_request = ifreq_flags(name, 0)
        fcntl.ioctl(inet.fileno(), SIOCGIFFLAGS, flags_request)
        current_flags = IFREQ_FLAGS.unpack(flags_request)[1]
        fcntl.ioctl(inet.fileno(), SIOCSIFFLAGS, ifreq_flags(name, current_flags | IFF_UP))
