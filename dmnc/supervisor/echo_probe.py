"""The direct path's probe: one ICMP echo to the VM's address, sent through the host's interface on the shared link
(bound to it, so no other route can answer for it), answered or not within a timeout.

The packet codec is pure (`echo_request`, `is_echo_reply_untrusted`); `probe_echo` is the socket boundary, where
OSError becomes the probe's `detail`. A raw socket needs root, which the service has. Binding to one interface is
the one platform difference: SO_BINDTODEVICE by name on Linux (socket(7)), IP_BOUND_IF / IPV6_BOUND_IF by index on
macOS (xnu bsd/netinet/in.h, bsd/netinet6/in6.h).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import sys
from dataclasses import dataclass

import trio

from dmnc.routes.manager import Address

# RFC 792 (ICMP echo / echo reply), RFC 4443 section 4.1/4.2 (ICMPv6 echo request 128 / reply 129).
ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
ECHO_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence number
# asm-generic/socket.h
SO_BINDTODEVICE = 25
# xnu bsd/netinet/in.h and bsd/netinet6/in6.h
IP_BOUND_IF = 25
IPV6_BOUND_IF = 125
PAYLOAD = b"dmnc-direct-path"
RECEIVE_BYTES = 2048


@dataclass(frozen=True, slots=True)
class EchoOutcome:
    answered: bool
    detail: str = ""  # why not


def internet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(version: int, identifier: int, sequence: int) -> bytes:
    """An echo request. ICMPv6's checksum covers a pseudo-header only the kernel knows: raw ICMPv6 sockets fill it
    in themselves (RFC 3542 section 3.1), so it goes out as zero."""
    kind = ICMP_ECHO_REQUEST if version == 4 else ICMPV6_ECHO_REQUEST
    unsummed = ECHO_HEADER.pack(kind, 0, 0, identifier, sequence) + PAYLOAD
    if version == 6:
        return unsummed
    return ECHO_HEADER.pack(kind, 0, internet_checksum(unsummed), identifier, sequence) + PAYLOAD


def is_echo_reply_untrusted(data: bytes, version: int, identifier: int, sequence: int) -> bool:
    """Whether `data`, as a raw socket delivers it (IPv4 with its IP header, IPv6 without), is the reply to our
    request. Anything else, malformed included, is just not it."""
    if version == 4:
        if not data or data[0] >> 4 != 4:
            return False
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < ECHO_HEADER.size:
        return False
    kind, code, _, got_identifier, got_sequence = ECHO_HEADER.unpack_from(data)
    expected = ICMP_ECHO_REPLY if version == 4 else ICMPV6_ECHO_REPLY
    return (kind, code, got_identifier, got_sequence) == (expected, 0, identifier, sequence)


def _bind_to_interface(sock: trio.socket.SocketType, version: int, interface: str) -> None:
    if sys.platform == "darwin":
        index = socket.if_nametoindex(interface)
        if version == 4:
            sock.setsockopt(socket.IPPROTO_IP, IP_BOUND_IF, index)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_BOUND_IF, index)
    else:
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())


def _why(error: OSError) -> str:
    code = error.errno or 0
    return f"{errno.errorcode.get(code, str(code))}: {os.strerror(code)}" if code else str(error)


async def probe_echo(
    address: Address, interface: str, answer_within_s: float, identifier: int, sequence: int
) -> EchoOutcome:
    """Send one echo request to `address` through `interface`; answered when its reply arrives within
    `answer_within_s`."""
    version = address.version
    family, protocol = (
        (socket.AF_INET, socket.IPPROTO_ICMP) if version == 4 else (socket.AF_INET6, socket.IPPROTO_ICMPV6)
    )
    try:
        sock = trio.socket.socket(family, socket.SOCK_RAW, protocol)
    except OSError as error:
        return EchoOutcome(False, f"cannot open an ICMP socket ({_why(error)})")
    with sock:
        try:
            _bind_to_interface(sock, version, interface)
            await sock.sendto(echo_request(version, identifier, sequence), (str(address), 0))
            with trio.move_on_after(answer_within_s):
                while True:
                    data, source = await sock.recvfrom(RECEIVE_BYTES)
                    sender = ipaddress.ip_address(str(source[0]).split("%", 1)[0])
                    if sender == address and is_echo_reply_untrusted(data, version, identifier, sequence):
                        return EchoOutcome(True)
        except OSError as error:
            return EchoOutcome(False, _why(error))
    return EchoOutcome(False, f"no answer within {answer_within_s:g} s")
