"""macOS interface addresses from a NET_RT_IFLIST answer, built as xnu lays it out (bsd/net/if.h if_msghdr and
ifa_msghdr, bsd/net/if_dl.h sockaddr_dl, trimmed netmasks as rtsock.c writes them); malformed input never raises."""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.routes import pfroute
from dmnc.routes.darwin_host import IFA_MSGHDR, RTM_NEWADDR, InterfaceAddress, decode_interface_list_untrusted
from dmnc.routes.hoststate import host_networks_of

ip = ipaddress.ip_address
# if.h IFF_*: en0 is UP|BROADCAST|RUNNING|SIMPLEX|MULTICAST, a utun UP|POINTOPOINT|RUNNING|MULTICAST (ifconfig(8)).
EN0_FLAGS = 0x8863
UTUN_FLAGS = 0x8051


def padded(sockaddrs: list[bytes]) -> bytes:
    return b"".join(s + bytes(pfroute.roundup(len(s)) - len(s)) for s in sockaddrs)


def interface_message(index: int, flags: int, name: str) -> bytes:
    link = struct.pack("=BBHBBBB", 8 + len(name) + 6, pfroute.AF_LINK, index, 6, len(name), 6, 0) + name.encode()
    link += bytes(6)
    body = padded([link])
    header = pfroute.IF_MSGHDR.pack(pfroute.IF_MSGHDR_LENGTH + len(body), 5, pfroute.RTM_IFINFO, 0x10, flags, index)
    return header + bytes(pfroute.IF_MSGHDR_LENGTH - len(header)) + body


def address_message(index: int, netmask: bytes, address: bytes, far_end: bytes | None) -> bytes:
    addrs = pfroute.RTA_NETMASK | pfroute.RTA_IFA | (pfroute.RTA_BRD if far_end is not None else 0)
    body = padded([netmask, address, *([far_end] if far_end is not None else [])])
    return IFA_MSGHDR.pack(IFA_MSGHDR.size + len(body), 5, RTM_NEWADDR, addrs, 0, index, 0) + body


def sockaddr_in(address: str) -> bytes:
    return struct.pack("=BBH", 16, pfroute.AF_INET, 0) + ip(address).packed + bytes(8)


def sockaddr_in6(address: str) -> bytes:
    return struct.pack("=BBHI", 28, pfroute.AF_INET6, 0, 0) + ip(address).packed + bytes(4)


IFLIST = b"".join(
    [
        interface_message(4, EN0_FLAGS, "en0"),
        # 192.168.1.20/24 broadcast 192.168.1.255: the netmask trimmed to its last non-zero byte (sa_len 7).
        address_message(
            4,
            bytes([7, pfroute.AF_INET, 0, 0, 255, 255, 255]),
            sockaddr_in("192.168.1.20"),
            sockaddr_in("192.168.1.255"),
        ),
        # 2001:db8:1::5/64: an IPv6 netmask trimmed after its eight 0xff bytes.
        address_message(4, bytes([16, pfroute.AF_INET6]) + bytes(6) + b"\xff" * 8, sockaddr_in6("2001:db8:1::5"), None),
        interface_message(9, UTUN_FLAGS, "utun3"),
        # A VPN's point-to-point address: 10.8.0.6 --> 10.8.0.5 netmask 0xffffffff.
        address_message(
            9, bytes([8, pfroute.AF_INET, 0, 0, 255, 255, 255, 255]), sockaddr_in("10.8.0.6"), sockaddr_in("10.8.0.5")
        ),
        interface_message(12, UTUN_FLAGS, "utun7"),
        address_message(
            12,
            bytes([8, pfroute.AF_INET, 0, 0, 255, 255, 255, 255]),
            sockaddr_in("10.33.33.1"),
            sockaddr_in("10.33.33.2"),
        ),
    ]
)


def test_interface_list_gives_broadcast_ipv6_and_point_to_point_addresses() -> None:
    assert decode_interface_list_untrusted(IFLIST) == [
        InterfaceAddress("en0", ip("192.168.1.20"), ip("192.168.1.20"), 24),
        InterfaceAddress("en0", ip("2001:db8:1::5"), ip("2001:db8:1::5"), 64),
        InterfaceAddress("utun3", ip("10.8.0.6"), ip("10.8.0.5"), 32),
        InterfaceAddress("utun7", ip("10.33.33.1"), ip("10.33.33.2"), 32),
    ]


def test_host_networks_of_the_list_leave_out_dmncs_utun() -> None:
    entries = [(a.interface, a.local, a.address, a.prefix_length) for a in decode_interface_list_untrusted(IFLIST)]
    assert [f"{n.interface} {n.network}" for n in host_networks_of(entries, "utun7")] == [
        "en0 192.168.1.20/32",
        "en0 192.168.1.0/24",
        "en0 2001:db8:1::5/128",
        "en0 2001:db8:1::/64",
        "utun3 10.8.0.6/32",
        "utun3 10.8.0.5/32",
    ]


def test_an_address_of_an_unlisted_interface_is_dropped_and_counted() -> None:
    drops: Counter[str] = Counter()
    orphan = address_message(5, bytes([7, pfroute.AF_INET, 0, 0, 255, 255, 255]), sockaddr_in("10.1.1.1"), None)
    assert decode_interface_list_untrusted(orphan + IFLIST, drops)[0].interface == "en0"
    assert drops == {"malformed": 1}


@settings(deadline=None)
@given(st.data())
def test_corrupted_interface_lists_never_raise(data: st.DataObject) -> None:
    corrupted = bytearray(IFLIST)
    for _ in range(data.draw(st.integers(1, 8))):
        corrupted[data.draw(st.integers(0, len(corrupted) - 1))] = data.draw(st.integers(0, 255))
    decode_interface_list_untrusted(bytes(corrupted[: data.draw(st.integers(0, len(corrupted)))]), Counter())
