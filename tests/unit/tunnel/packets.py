"""Builders of the IP packets the flow filter judges (checksums left zero: the filter never reads them)."""

from __future__ import annotations

import ipaddress
import struct

from dmnc.tunnel.flowfilter import ICMP, ICMPV6, TCP, UDP

HOST4, VM4 = "10.33.33.1", "10.33.33.2"
HOST6, VM6 = "fd33:33:33::1", "fd33:33:33::2"
CONTAINER4, CONTAINER6 = "172.18.0.5", "fd00:18::5"
SYN, ACK, PSH = 0x02, 0x10, 0x08
_MF = 0x2000


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def ip(source: str, destination: str, protocol: int, payload: bytes, *, ident: int = 1, frag: int = 0) -> bytes:
    """An IPv4 or IPv6 packet (by the addresses' family); `frag` is IPv4's flags+offset field or, for IPv6, the
    offset|M word of a fragment header that is then inserted."""
    src, dst = packed(source), packed(destination)
    if len(src) == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, protocol, 0, src, dst)
        return header + payload
    if frag or ident != 1:
        payload = struct.pack("!BBHI", protocol, 0, frag, ident) + payload
        protocol = 44
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), protocol, 64, src, dst) + payload


def tcp(source: str, sport: int, destination: str, dport: int, flags: int = ACK) -> bytes:
    return ip(source, destination, TCP, struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 0x50, flags, 65535, 0, 0))


def udp(source: str, sport: int, destination: str, dport: int, data: bytes = b"x", **kwargs: int) -> bytes:
    return ip(source, destination, UDP, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data, **kwargs)


def icmp(source: str, destination: str, kind: int, ident: int = 7, body: bytes = b"") -> bytes:
    protocol = ICMP if ":" not in source else ICMPV6
    return ip(source, destination, protocol, struct.pack("!BBHHH", kind, 0, 0, ident, 1) + body)


def icmp_error(source: str, destination: str, kind: int, quoted: bytes) -> bytes:
    protocol = ICMP if ":" not in source else ICMPV6
    return ip(source, destination, protocol, struct.pack("!BBHI", kind, 0, 0, 0) + quoted[:48])
