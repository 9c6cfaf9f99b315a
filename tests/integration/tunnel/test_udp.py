"""UDP endpoint on loopback: shared port across families, connected-socket delivery, transient errors."""

from __future__ import annotations

import errno
import socket
import time

import pytest

from dmnc.tunnel import udp
from dmnc.tunnel.udp import SOCKET_BUFFER_BYTES, UdpEndpoint, UdpError, normalize_endpoint
from tests.conftest import require_root


def receive_all(sock: socket.socket) -> list[bytes]:
    time.sleep(0.05)
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(2048))
        except BlockingIOError:
            return datagrams


def test_port_zero_picks_one_free_port_for_both_families() -> None:
    endpoint = UdpEndpoint.open(0, ["127.0.0.1", "::1"])
    try:
        assert endpoint.port > 0
        assert [sock.getsockname()[1] for sock in endpoint.listeners] == [endpoint.port, endpoint.port]
        assert [sock.family for sock in endpoint.listeners] == [socket.AF_INET, socket.AF_INET6]
    finally:
        endpoint.close()


def test_busy_port_and_bad_address_are_udp_errors() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        with pytest.raises(UdpError, match=r"binding UDP 127\.0\.0\.1"):
            UdpEndpoint.open(squatter.getsockname()[1], ["127.0.0.1"])
    with pytest.raises(UdpError, match="not an IP address"):
        UdpEndpoint.open(0, ["localhost"])


def test_connected_socket_gets_its_peers_datagrams_and_listener_the_rest() -> None:
    endpoint = UdpEndpoint.open(0, ["127.0.0.1"])
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
    ):
        try:
            peer.bind(("127.0.0.1", 0))
            peer_endpoint = normalize_endpoint(peer.getsockname())
            connected = endpoint.connect(peer_endpoint)
            assert connected is not None
            assert endpoint.connect(peer_endpoint) is connected
            connected.send(b"hello peer")
            assert peer.recvfrom(100) == (b"hello peer", ("127.0.0.1", endpoint.port))
            peer.sendto(b"from peer", ("127.0.0.1", endpoint.port))
            stranger.sendto(b"from stranger", ("127.0.0.1", endpoint.port))
            assert receive_all(connected) == [b"from peer"]
            assert receive_all(endpoint.listeners[0]) == [b"from stranger"]
            assert endpoint.disconnect(peer_endpoint) is connected
        finally:
            endpoint.close()


def test_unconnected_send_to_a_missing_family_or_refused_port_is_a_drop_not_an_error() -> None:
    endpoint = UdpEndpoint.open(0, ["127.0.0.1"])
    try:
        assert not endpoint.send_unconnected(b"x", ("::1", 9))
        assert endpoint.send_unconnected(b"x", ("127.0.0.1", 9))
    finally:
        endpoint.close()


def test_ipv6_scope_is_dropped_from_endpoints() -> None:
    assert normalize_endpoint(("fe80::1%eth0", 51820, 0, 2)) == ("fe80::1", 51820)
    assert normalize_endpoint(("10.0.0.1", 1)) == ("10.0.0.1", 1)


@pytest.mark.lab
def test_socket_buffers_are_enlarged_past_the_sysctl_cap_as_root() -> None:
    require_root()
    endpoint = UdpEndpoint.open(0, ["127.0.0.1"])
    try:
        (listener,) = endpoint.listeners
        # Linux reports twice the requested size (socket(7): the kernel doubles it for bookkeeping overhead).
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= SOCKET_BUFFER_BYTES
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= SOCKET_BUFFER_BYTES
    finally:
        endpoint.close()


def test_segmented_send_arrives_as_separate_datagrams_with_a_short_last_one() -> None:
    endpoint = UdpEndpoint.open(0, ["127.0.0.1"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        try:
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
            connected = endpoint.connect(normalize_endpoint(peer.getsockname()))
            assert connected is not None
            datagrams = [b"a" * 100, b"b" * 100, b"c" * 40]
            if not endpoint.send_segments(connected, datagrams):
                pytest.skip("this kernel has no UDP segmentation offload")
            assert receive_all(peer) == datagrams
        finally:
            endpoint.close()


def test_port_zero_picks_again_when_the_chosen_port_is_taken_in_the_other_family(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_new_socket = udp._new_socket
    refused: list[int] = []

    def new_socket(family: socket.AddressFamily, bind_address: tuple[str, int]) -> socket.socket:
        if family == socket.AF_INET6 and not refused:
            refused.append(bind_address[1])
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return real_new_socket(family, bind_address)

    monkeypatch.setattr(udp, "_new_socket", new_socket)
    endpoint = UdpEndpoint.open(0, ["127.0.0.1", "::1"])
    try:
        assert len(endpoint.listeners) == 2
        assert {sock.getsockname()[1] for sock in endpoint.listeners} == {endpoint.port}
    finally:
        endpoint.close()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("::1", 0))
        taken = squatter.getsockname()[1]
        with pytest.raises(UdpError, match="Address already in use"):
            UdpEndpoint.open(taken, ["127.0.0.1", "::1"])  # a fixed port is never silently changed


def test_a_port_held_by_another_reuseport_socket_is_reported_taken_not_shared() -> None:
    """Another root process binding with SO_REUSEPORT (as dmnc itself does) would otherwise join our port."""
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    squatter.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(UdpError, match=r"binding UDP 127\.0\.0\.1 port"):
            UdpEndpoint.open(squatter.getsockname()[1], ("127.0.0.1",))
    finally:
        squatter.close()
