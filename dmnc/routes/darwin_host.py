"""macOS: the host's interface addresses (HostAddressSource) and DNS servers, behind the same small interface as
Linux's.

Addresses come from the NET_RT_IFLIST sysctl (sysctl(3), xnu bsd/net/rtsock.c sysctl_iflist): per interface one
RTM_IFINFO (if_msghdr, its sockaddr_dl carrying the name) followed by one RTM_NEWADDR (ifa_msghdr) per address,
with RTA_NETMASK, RTA_IFA (the address) and RTA_BRD (the broadcast address, or on an IFF_POINTOPOINT interface
such as a VPN's utun the far end). Layouts: xnu bsd/net/if.h (if_msghdr, ifa_msghdr, IFF_*), bsd/net/if_dl.h
(sockaddr_dl). A change is noticed on a routing socket of its own: xnu sends RTM_NEWADDR/RTM_DELADDR/RTM_IFINFO
to every routing socket when an address or interface changes (route(4)).

DNS servers: `scutil --dns` (scutil(8)), the resolver configuration macOS really uses; /etc/resolv.conf is only
a courtesy copy of the primary resolver there.

Bytes from the kernel are untrusted: the decoder never raises; a malformed message is dropped, counted and logged.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

from dmnc.routes import pfroute
from dmnc.routes.darwin import read_sysctl
from dmnc.routes.hoststate import host_networks_of, parse_scutil_dns, read_dns_servers
from dmnc.routes.manager import Address, RouteOperationError
from dmnc.routes.policy import HostNetwork

logger = logging.getLogger(__name__)

# bsd/sys/sysctl.h, bsd/sys/socket.h
CTL_NET = 4
NET_RT_IFLIST = 3
# bsd/net/route.h
RTM_NEWADDR = 0xC
RTM_DELADDR = 0xD
# bsd/net/if.h: ifa_msghdr, 20 bytes: msglen, version, type, addrs, flags, index, (2 pad), metric.
IFA_MSGHDR = struct.Struct("=HBBiiHxxi")
IFF_POINTOPOINT = 0x10
SYSCTL_ATTEMPTS = 3
# `scutil --dns` answers at once; a hung one must not hold up the host-state feed.
SCUTIL_TIMEOUT_SECONDS = 5.0
MAX_SCUTIL_OUTPUT_BYTES = 256 * 1024
RECEIVE_BUFFER_BYTES = 8192


@dataclass(frozen=True, slots=True)
class InterfaceAddress:
    interface: str
    local: Address
    address: Address  # the far end on a point-to-point interface, else `local` again
    prefix_length: int


class _Malformed(Exception):
    pass


# The sockaddr readers are pfroute's (its underscore names): an address message carries the same sockaddrs, in the
# same order and padding, as a route message.


def decode_interface_list_untrusted(data: bytes, drops: Counter[str] | None = None) -> list[InterfaceAddress]:
    """The IPv4 and IPv6 addresses in a NET_RT_IFLIST answer; other families and malformed messages are left out."""
    names: dict[int, str] = {}
    point_to_point: dict[int, bool] = {}
    addresses: list[InterfaceAddress] = []
    offset = 0
    while offset + pfroute.RT_MSGHDR_PREFIX.size <= len(data):
        length, version, message_type = pfroute.RT_MSGHDR_PREFIX.unpack_from(data, offset)
        if length < pfroute.RT_MSGHDR_PREFIX.size or offset + length > len(data):
            logger.warning("interface list: dropped the rest: a message claims %d bytes, %d remain", length, len(data))
            _count(drops, "bad-length")
            break
        message = data[offset : offset + length]
        offset += length
        if version != pfroute.RTM_VERSION:
            continue
        try:
            if message_type == pfroute.RTM_IFINFO:
                index, flags, name = _interface_untrusted(message)
                names[index] = name
                point_to_point[index] = bool(flags & IFF_POINTOPOINT)
            elif message_type == RTM_NEWADDR:
                found = _address_untrusted(message, names, point_to_point)
                if found is not None:
                    addresses.append(found)
        except _Malformed as error:
            logger.warning("interface list: dropped a message of type %d: %s", message_type, error)
            _count(drops, "malformed")
    return addresses


def _interface_untrusted(message: bytes) -> tuple[int, int, str]:
    if len(message) < pfroute.IF_MSGHDR_LENGTH:
        raise _Malformed(f"interface message of {len(message)} bytes")
    _length, _version, _type, addrs, flags, index = pfroute.IF_MSGHDR.unpack_from(message)
    sockaddrs = _sockaddrs(message[pfroute.IF_MSGHDR_LENGTH :], addrs)
    link = sockaddrs.get(pfroute.RTA_IFP, b"")
    if len(link) < pfroute.SOCKADDR_DL_NAME_OFFSET or link[1] != pfroute.AF_LINK:
        raise _Malformed("interface message without its link address")
    try:
        name = pfroute.link_name_untrusted(link)
    except pfroute.MalformedMessageError as error:
        raise _Malformed(str(error)) from error
    return int(index), int(flags), name


def _address_untrusted(
    message: bytes, names: dict[int, str], point_to_point: dict[int, bool]
) -> InterfaceAddress | None:
    if len(message) < IFA_MSGHDR.size:
        raise _Malformed(f"address message of {len(message)} bytes")
    _length, _version, _type, addrs, _flags, index, _metric = IFA_MSGHDR.unpack_from(message)
    sockaddrs = _sockaddrs(message[IFA_MSGHDR.size :], addrs)
    own = sockaddrs.get(pfroute.RTA_IFA, b"")
    family = own[1] if len(own) > 1 else pfroute.AF_UNSPEC
    if family not in (pfroute.AF_INET, pfroute.AF_INET6):
        return None  # the interface's link-layer address, or a family dmnc does not route
    if index not in names:
        raise _Malformed(f"address of interface {index}, which was not listed before it")
    try:
        local = pfroute._inet_address_untrusted(own, family)
        width = local.max_prefixlen
        mask = sockaddrs.get(pfroute.RTA_NETMASK)
        prefix = width if mask is None else pfroute._prefix_length_untrusted(mask, family)
        address = local
        far_end = sockaddrs.get(pfroute.RTA_BRD)
        if point_to_point.get(index) and far_end is not None and len(far_end) > 1 and far_end[1] == family:
            address = pfroute._inet_address_untrusted(far_end, family)
    except pfroute.MalformedMessageError as error:
        raise _Malformed(str(error)) from error
    return InterfaceAddress(names[index], local, address, prefix)


def _sockaddrs(data: bytes, addrs: int) -> dict[int, bytes]:
    try:
        return pfroute._sockaddrs_untrusted(data, addrs)
    except pfroute.MalformedMessageError as error:
        raise _Malformed(str(error)) from error


def _count(drops: Counter[str] | None, reason: str) -> None:
    if drops is not None:
        drops[reason] += 1


class DarwinHostAddresses:
    """HostAddressSource for macOS; `tunnel_interface` (dmnc's utun) is left out."""

    def __init__(self, tunnel_interface: str) -> None:
        self._tunnel = tunnel_interface
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.dropped: Counter[str] = Counter()

    async def host_networks(self) -> tuple[HostNetwork, ...]:
        mib = (CTL_NET, pfroute.AF_ROUTE, 0, pfroute.AF_UNSPEC, NET_RT_IFLIST, 0)
        try:
            data = await trio.to_thread.run_sync(
                partial(read_sysctl, self._libc, mib, attempts=SYSCTL_ATTEMPTS, what="the interface list")
            )
        except OSError as error:
            code = error.errno or 0
            raise RouteOperationError("list interface addresses", None, code, os.strerror(code)) from error
        entries = decode_interface_list_untrusted(data, self.dropped)
        return host_networks_of(((e.interface, e.local, e.address, e.prefix_length) for e in entries), self._tunnel)

    @asynccontextmanager
    async def address_changes(self) -> AsyncIterator[AsyncIterator[None]]:
        try:
            routing = socket.socket(pfroute.AF_ROUTE, socket.SOCK_RAW, pfroute.AF_UNSPEC)
        except OSError as error:
            code = error.errno or 0
            raise RouteOperationError("open a routing socket", None, code, os.strerror(code)) from error
        routing.setblocking(False)
        try:
            yield _AddressChanges(routing)
        finally:
            routing.close()


class _AddressChanges:
    """One item per address or interface message on the routing socket (route changes are skipped)."""

    def __init__(self, routing: socket.socket) -> None:
        self._routing = routing

    def __aiter__(self) -> _AddressChanges:
        return self

    async def __anext__(self) -> None:
        while True:
            try:
                data = self._routing.recv(RECEIVE_BUFFER_BYTES)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._routing)
                continue
            except OSError:
                return  # ENOBUFS: messages were lost; reading the addresses again is the answer either way
            if len(data) >= pfroute.RT_MSGHDR_PREFIX.size:
                message_type = pfroute.RT_MSGHDR_PREFIX.unpack_from(data)[2]
                if message_type in (RTM_NEWADDR, RTM_DELADDR, pfroute.RTM_IFINFO):
                    return


async def read_dns_servers_darwin() -> tuple[Address, ...]:
    """The DNS servers `scutil --dns` lists; /etc/resolv.conf's when scutil cannot be run."""
    try:
        with trio.fail_after(SCUTIL_TIMEOUT_SECONDS):
            result = await trio.run_process(["/usr/sbin/scutil", "--dns"], capture_stdout=True, check=False)
    except (OSError, trio.TooSlowError) as error:
        logger.debug("scutil --dns failed (%s); reading /etc/resolv.conf", error)
        return await trio.to_thread.run_sync(read_dns_servers)
    if result.returncode != 0:
        return await trio.to_thread.run_sync(read_dns_servers)
    return parse_scutil_dns(result.stdout[:MAX_SCUTIL_OUTPUT_BYTES].decode("utf-8", errors="replace"))
