"""utun byte layouts against xnu's headers (bsd/net/if_utun.h, bsd/sys/kern_control.h,
bsd/sys/sockio.h, bsd/net/if.h, bsd/netinet6/in6_var.h)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from dmnc.tun import TunError
from dmnc.tun.darwin import (
    CTL_INFO,
    CTLIOCGINFO,
    SIOCAIFADDR,
    SIOCAIFADDR_IN6,
    SIOCGIFFLAGS,
    SIOCSIFFLAGS,
    SIOCSIFMTU,
    UTUN_CONTROL_NAME,
    ctl_info_request,
    family_header,
    ifaliasreq,
    ifreq_flags,
    ifreq_mtu,
    in6_aliasreq,
    sockaddr_in,
    sockaddr_in6,
    utun_unit,
)


def ioc(direction: int, group: str, number: int, size: int) -> int:
    """bsd/sys/ioccom.h _IOC: direction (IN 0x80000000, OUT 0x40000000), 13-bit length, group, number."""
    return direction | ((size & 0x1FFF) << 16) | (ord(group) << 8) | number


IOC_IN, IOC_INOUT = 0x80000000, 0xC0000000


def test_ioctl_numbers_match_xnu_definitions() -> None:
    assert ioc(IOC_INOUT, "N", 3, 100) == CTLIOCGINFO == 0xC0644E03
    assert ioc(IOC_IN, "i", 16, 32) == SIOCSIFFLAGS == 0x80206910
    assert ioc(IOC_INOUT, "i", 17, 32) == SIOCGIFFLAGS == 0xC0206911
    assert ioc(IOC_IN, "i", 52, 32) == SIOCSIFMTU == 0x80206934
    assert ioc(IOC_IN, "i", 26, 64) == SIOCAIFADDR == 0x8040691A
    assert ioc(IOC_IN, "i", 26, 128) == SIOCAIFADDR_IN6 == 0x8080691A


def test_ctl_info_is_100_bytes_with_name_at_offset_4() -> None:
    info = ctl_info_request()
    assert len(info) == CTL_INFO.size == 100
    assert info[:4] == bytes(4)
    assert info[4:].rstrip(b"\0") == UTUN_CONTROL_NAME.encode()


@pytest.mark.parametrize(("name", "unit"), [("utun0", 1), ("utun7", 8), ("utun123", 124)])
def test_utun_n_is_control_unit_n_plus_one(name: str, unit: int) -> None:
    assert utun_unit(name) == unit


@pytest.mark.parametrize("name", ["tun0", "utun", "utunx", "utun-1"])
def test_non_utun_names_are_refused(name: str) -> None:
    with pytest.raises(TunError, match="utunN"):
        utun_unit(name)


def test_family_header_is_big_endian_darwin_family_by_ip_version() -> None:
    assert family_header(bytes([0x45]) + bytes(19)) == b"\x00\x00\x00\x02"
    assert family_header(bytes([0x60]) + bytes(39)) == b"\x00\x00\x00\x1e"


def test_sockaddr_layouts() -> None:
    v4 = sockaddr_in(ipaddress.IPv4Address("10.33.33.1"))
    assert len(v4) == 16
    assert v4[:2] == bytes([16, 2])
    assert v4[4:8] == bytes([10, 33, 33, 1])
    v6 = sockaddr_in6(ipaddress.IPv6Address("fd00::1"))
    assert len(v6) == 28
    assert v6[:2] == bytes([28, 30])
    assert v6[8:24] == ipaddress.IPv6Address("fd00::1").packed


def test_ifreq_flags_is_a_short_and_mtu_an_int_after_the_name() -> None:
    flags = ifreq_flags("utun3", 0x8051)
    assert len(flags) == 32
    assert flags[:16].rstrip(b"\0") == b"utun3"
    assert struct.unpack_from("=H", flags, 16)[0] == 0x8051
    mtu = ifreq_mtu("utun3", 1420)
    assert len(mtu) == 32
    assert struct.unpack_from("=i", mtu, 16)[0] == 1420


def test_ifaliasreq_puts_peer_in_broadaddr_and_host_mask() -> None:
    request = ifaliasreq("utun3", ipaddress.IPv4Interface("10.33.33.1/24"), ipaddress.IPv4Address("10.33.33.2"))
    assert len(request) == 64
    assert request[16:18] == bytes([16, 2])
    assert request[20:24] == bytes([10, 33, 33, 1])
    assert request[32:34] == bytes([16, 2])
    assert request[36:40] == bytes([10, 33, 33, 2])
    assert request[48:50] == bytes([16, 0])
    assert request[52:56] == b"\xff\xff\xff\xff"


def test_ifaliasreq_without_peer_makes_the_local_address_its_own_destination() -> None:
    # Otherwise xnu's in_ifinit returns early for the point-to-point utun and no route at all exists for A/N.
    request = ifaliasreq("utun3", ipaddress.IPv4Interface("10.0.0.2/24"), None)
    assert request[16:18] == bytes([16, 2])
    assert request[20:24] == bytes([10, 0, 0, 2])
    assert request[32:34] == bytes([16, 2]), "the destination must be AF_INET"
    assert request[36:40] == bytes([10, 0, 0, 2])
    assert request[48:50] == bytes([16, 0])
    assert request[52:56] == bytes([255, 255, 255, 0])


def test_in6_aliasreq_layout_with_peer_and_infinite_lifetimes() -> None:
    local = ipaddress.IPv6Interface("fd00:33::1/64")
    peer = ipaddress.IPv6Address("fd00:33::2")
    request = in6_aliasreq("utun3", local, peer)
    assert len(request) == 128
    assert request[16:18] == bytes([28, 30])
    assert request[24:40] == local.ip.packed
    assert request[44:46] == bytes([28, 30])
    assert request[52:68] == peer.packed
    assert request[72:74] == bytes([28, 30])
    assert request[80:96] == b"\xff" * 16  # prefix 128 on a point-to-point destination
    assert struct.unpack_from("=iqqII", request, 100) == (0, 0, 0, 0xFFFFFFFF, 0xFFFFFFFF)


def test_in6_aliasreq_without_peer_keeps_the_prefix_and_no_destination() -> None:
    request = in6_aliasreq("utun3", ipaddress.IPv6Interface("fd00:33::1/64"), None)
    assert request[44:72] == bytes(28)
    assert request[80:96] == b"\xff" * 8 + bytes(8)
