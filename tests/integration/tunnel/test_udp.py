"""UDP endpoint on loopback: shared port across families, connected-socket delivery, GSO, the send-error policy."""

from __future__ import annotations

import contextlib
import errno
import socket

import pytest

from dmnc.tunnel import udp
from dmnc.tunnel.udp import (
    SOCKET_BUFFER_BYTES,
    Received,
    UdpEndpoint,
    UdpError,
    UdpReceiver,
    normalize_endpoint,
)
from tests.conftest import require_root
from tests.lab.wait import wait_until

# Loopback delivers within the sending call; the deadline only matters on a badly overloaded machine.
ARRIVAL_TIMEOUT_S = 5.0


def receive_datagrams(sock: socket.socket, count: int) -> list[bytes]:
    """The datagrams waiting on non-blocking `sock` once at least `count` have arrived."""
    datagrams: list[bytes] = []

    def arrived() -> int:
        with contextlib.suppress(BlockingIOError):
            while True:
                datagrams.append(sock.recv(2048))
        return len(datagrams) >= count

    wait_until(arrived, ARRIVAL_TIMEOUT_S, f"{count} datagram(s)")
    return datagrams


def receive_on(receiver: UdpReceiver, count: int) -> Received:
    """Everything `receiver` got once at least `count` datagrams or errors have arrived."""
    total = Received()

    def arrived() -> bool:
        batch = receiver.receive(64)
        assert batch is not None
        total.datagrams += batch.datagrams
        total.errors += batch.errors
        return len(total.datagrams) + total.errors >= count

    wait_until(arrived, ARRIVAL_TIMEOUT_S, f"{count} datagram(s) or error(s)")
    return total


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


async def test_connected_socket_gets_its_peers_datagrams_and_listener_the_rest() -> None:
    endpoint = UdpEndpoint.open(0, ["127.0.0.1"])
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
    ):
        try:
            peer.bind(("127.0.0.1", 0))
            stranger.bind(("127.0.0.1", 0))
            peer_endpoint = normalize_endpoint(peer.getsockname())
            (listener,) = endpoint.receivers()
            connected = endpoint.connect(peer_endpoint)
            assert connected is not None
            assert connected.connected_to == peer_endpoint
            assert endpoint.connect(peer_endpoint) is None  # one socket per endpoint
            assert endpoint.connected_endpoints() == [peer_endpoint]
            assert endpoint.send(peer_endpoint, [b"hello peer"]) == 0
            assert peer.recvfrom(100) == (b"hello peer", ("127.0.0.1", endpoint.port))
            peer.sendto(b"from peer", ("127.0.0.1", endpoint.port))
            stranger.sendto(b"from stranger", ("127.0.0.1", endpoint.port))
            assert receive_on(connected, 1).datagrams == [(b"from peer", peer_endpoint)]
            stranger_endpoint = normalize_endpoint(stranger.getsockname())
            assert receive_on(listener, 1).datagrams == [(b"from stranger", stranger_endpoint)]
            endpoint.keep_connected([])  # the peer roamed away: its socket is retired, its receiver ends
            assert endpoint.connected_endpoints() == []
            assert not await connected.wait_readable()
            assert connected.receive(1) is None
        finally:
            endpoint.close()


def test_unconnected_send_to_a_missing_family_or_refused_port_is_a_drop_not_an_error() -> None:
    endpoint = UdpEndpoint.open(0, ["127.0.0.1"])
    try:
        assert endpoint.send(("::1", 9), [b"x", b"y"]) == 2
        assert endpoint.send(("127.0.0.1", 9), [b"x"]) == 0
    finally:
        endpoint.close()


def test_icmp_errors_on_a_connected_socket_are_counted_not_raised() -> None:
    endpoint = UdpEndpoint.open(0, ["127.0.0.1"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
        gone.bind(("127.0.0.1", 0))
        closed_port = normalize_endpoint(gone.getsockname())
    try:
        receiver = endpoint.connect(closed_port)
        assert receiver is not None
        assert endpoint.send(closed_port, [b"nobody listens"]) == 0
        # The port unreachable answer is queued on the socket (ECONNREFUSED): one error, no datagram.
        received = receive_on(receiver, 1)
        assert (received.datagrams, received.errors) == ([], 1)
    finally:
        endpoint.close()


def test_the_send_error_policy_drops_transient_errors_and_raises_the_rest() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for transient in (errno.ECONNREFUSED, errno.ENOBUFS, errno.EPERM):
            udp._check_transient(OSError(transient, "transient"), sock, ("192.0.2.1", 1))
        udp._check_transient(socket.gaierror(socket.EAI_NONAME, "no name"), sock, ("192.0.2.1", 1))
        with pytest.raises(UdpError, match=r"^sending to 192\.0\.2\.1 port 1: Bad file descriptor$"):
            udp._check_transient(OSError(errno.EBADF, "Bad file descriptor"), sock, ("192.0.2.1", 1))
    # A socket retired while a send on it was under way loses that send; the tunnel goes on.
    udp._check_transient(OSError(errno.EBADF, "Bad file descriptor"), sock, ("192.0.2.1", 1))


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
            peer_endpoint = normalize_endpoint(peer.getsockname())
            assert endpoint.connect(peer_endpoint) is not None
            datagrams = [b"a" * 100, b"b" * 100, b"c" * 40, b"d" * 100]  # two GSO runs: 100, 100, 40 | 100
            assert endpoint.send(peer_endpoint, datagrams) == 0
            if not endpoint.segmentation_offload:
                pytest.skip("this kernel has no UDP segmentation offload")
            assert receive_datagrams(peer, len(datagrams)) == datagrams
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
