"""TUN link and address requests (RTM_NEWLINK, RTM_NEWADDR), and how their acknowledgements are awaited."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

import pytest

from dmnc import netlink
from dmnc.netlink import (
    IFA_ADDRESS,
    IFA_LOCAL,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    RTM_NEWADDR,
    RTM_NEWLINK,
)
from dmnc.tun import TunError
from dmnc.tun.linux import request_acknowledged
from dmnc.tun.rtnetlink import (
    IFA_F_NODAD,
    IFF_UP,
    IFLA_MTU,
    encode_add_address,
    encode_link_settings,
    encode_no_link_local,
)


def test_link_settings_sets_mtu_and_up_flag_with_change_mask() -> None:
    message = encode_link_settings(7, 42, mtu=1420, up=True)
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", message)
    assert (length, kind, flags, seq, pid) == (len(message), RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 42, 0)
    family, _type, index, ifi_flags, change = struct.unpack_from("=BxHiII", message, 16)
    assert (family, index, ifi_flags, change) == (socket.AF_UNSPEC, 7, IFF_UP, IFF_UP)
    assert netlink.attributes_untrusted(message[32:]) == {IFLA_MTU: struct.pack("=I", 1420)}


def test_point_to_point_ipv4_address_is_local_plus_peer_with_host_prefix() -> None:
    message = encode_add_address(3, 1, ipaddress.IPv4Interface("10.33.33.1/24"), ipaddress.IPv4Address("10.33.33.2"))
    _length, kind, flags, _seq, _pid = struct.unpack_from("=IHHII", message)
    assert kind == RTM_NEWADDR
    assert flags == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    assert struct.unpack_from("=BBBBI", message, 16) == (socket.AF_INET, 32, 0, 0, 3)
    assert netlink.attributes_untrusted(message[24:]) == {
        IFA_LOCAL: bytes([10, 33, 33, 1]),
        IFA_ADDRESS: bytes([10, 33, 33, 2]),
    }


def test_ipv6_address_without_peer_keeps_prefix_and_skips_duplicate_detection() -> None:
    local = ipaddress.IPv6Interface("fd00:33::1/64")
    message = encode_add_address(9, 1, local)
    assert struct.unpack_from("=BBBBI", message, 16) == (socket.AF_INET6, 64, IFA_F_NODAD, 0, 9)
    assert netlink.attributes_untrusted(message[24:]) == {IFA_LOCAL: local.ip.packed, IFA_ADDRESS: local.ip.packed}


def test_mixed_ip_versions_are_refused() -> None:
    with pytest.raises(ValueError, match="different IP versions"):
        encode_add_address(1, 1, ipaddress.IPv4Interface("10.0.0.1/32"), ipaddress.IPv6Address("::1"))


def kernel_answering(reply: bytes) -> tuple[socket.socket, socket.socket]:
    """A datagram socket pair standing in for a netlink socket: the second end has `reply` queued to read."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    kernel.send(reply)
    return ours, kernel


def test_request_is_acknowledged_by_the_ack_of_its_own_sequence_number() -> None:
    reply = netlink.encode_error_message(netlink.ErrorMessage(1, 0, -errno.EEXIST)) + netlink.encode_error_message(
        netlink.ErrorMessage(2, 0, 0)
    )
    ours, kernel = kernel_answering(reply)
    with ours, kernel:
        request_acknowledged(ours, 2, b"request", "adding an address")
        assert kernel.recv(100) == b"request"


def test_refused_request_is_a_tun_error_naming_the_step_and_the_reason() -> None:
    ours, kernel = kernel_answering(netlink.encode_error_message(netlink.ErrorMessage(1, 0, -errno.EEXIST)))
    with ours, kernel, pytest.raises(TunError, match="adding an address: File exists"):
        request_acknowledged(ours, 1, b"request", "adding an address")


def test_malformed_reply_is_a_tun_error_not_a_traceback() -> None:
    truncated = netlink.encode_error_message(netlink.ErrorMessage(1, 0, 0))[:-4]
    ours, kernel = kernel_answering(truncated)
    with ours, kernel, pytest.raises(TunError, match=r"malformed netlink reply \(bad-length\)"):
        request_acknowledged(ours, 1, b"request", "adding an address")


def test_no_link_local_sets_the_ipv6_address_generation_mode_none_nested_in_af_spec() -> None:
    message = encode_no_link_local(5, 9)
    _length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", message)
    assert (kind, flags, seq) == (RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, 9)
    family, _type, index, ifi_flags, change = struct.unpack_from("=BxHiII", message, 16)
    assert (family, index, ifi_flags, change) == (socket.AF_UNSPEC, 5, 0, 0)  # flags untouched: the link stays down
    # IFLA_AF_SPEC (26) -> AF_INET6 (10) -> IFLA_INET6_ADDR_GEN_MODE (8) = IN6_ADDR_GEN_MODE_NONE (1), both nested.
    (af_spec,) = netlink.attributes_untrusted(message[32:]).items()
    assert af_spec[0] == 26 | 0x8000
    (inet6,) = netlink.attributes_untrusted(af_spec[1]).items()
    assert inet6[0] == socket.AF_INET6 | 0x8000
    assert netlink.attributes_untrusted(inet6[1]) == {8: b"\x01"}
