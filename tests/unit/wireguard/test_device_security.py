"""What a device refuses, and why: unknown keys, bad macs, replays, floods, cookies under load, roaming, and
cryptokey routing (allowed IPs) in both directions for IPv4 and IPv6."""

from __future__ import annotations

import ipaddress

import pytest

from dmnc.wireguard import Device, Drop, DropReason, PeerConfig, PeerConfigError, SendDatagram, generate_private_key
from tests.fakes.wireguard_network import WALL_OFFSET, Host, Network, ip4, ip6


def establish(net: Network, a: Host, b: Host) -> None:
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"establish"))
    net.deliver_all()
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"establish")]


def clone(net: Network, host: Host, name: str, endpoint: tuple[str, int], private_key: bytes) -> Host:
    """A second device with `private_key` and `host`'s peers: it can impersonate or replace that host."""
    device = Device(private_key, rng=net.rng, wall_offset=WALL_OFFSET, timing=net.timing)
    for public_key in host.device.peer_stats():
        peer = host.device._peers[public_key]  # white-box: copy the configuration as is
        device.add_peer(peer.config)
    replacement = Host(name, endpoint, device)
    net.hosts[endpoint] = replacement
    return replacement


def test_initiation_from_an_unknown_static_key_is_dropped_as_unknown_peer() -> None:
    net = Network()
    _a, b = net.pair()
    stranger = net.add_host("stranger", ("192.0.2.9", 1))
    stranger.device.add_peer(
        PeerConfig(b.device.public_key, allowed_ips=(ipaddress.ip_network("10.0.0.2/32"),), endpoint=b.endpoint)
    )
    net.send(stranger, ip4("10.0.0.9", "10.0.0.2"))
    net.deliver_all()
    assert b.drops == [DropReason.UNKNOWN_PEER]
    assert b.device.drops[DropReason.UNKNOWN_PEER] == 1
    assert b.tunnel == []


def test_initiation_for_a_different_responder_key_fails_mac1() -> None:
    net = Network()
    a, b = net.pair()
    wrong = generate_private_key(net.rng)
    impostor = clone(net, b, "impostor", b.endpoint, wrong)  # a still believes in b's real public key
    net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    net.deliver_all()
    assert impostor.drops == [DropReason.INVALID_MAC1]
    assert impostor.tunnel == []


def test_corrupted_mac1_is_dropped_before_any_expensive_work() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    (initiation,) = net.drop_all()
    tampered = bytearray(initiation.data)
    tampered[116] ^= 0x01  # first byte of mac1
    net.hosts[b.endpoint].device.decapsulate(bytes(tampered), a.endpoint, net.now)
    assert b.device.drops[DropReason.INVALID_MAC1] == 1


def test_replayed_initiation_later_is_stale_and_changes_nothing() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    recorded = net.in_flight[0]
    net.deliver_all()
    net.advance(30.0)
    net.deliver(recorded)
    assert b.drops == [DropReason.STALE_TIMESTAMP]
    assert net.in_flight == []  # no response to a replay
    net.send(b, ip4("10.0.0.2", "10.0.0.1", b"session intact"))
    net.deliver_all()
    assert a.tunnel == [ip4("10.0.0.2", "10.0.0.1", b"session intact")]


def test_more_than_50_initiations_per_second_from_one_peer_are_rate_limited() -> None:
    net = Network()
    a, b = net.pair()
    twin = clone(net, a, "twin", ("192.0.2.10", 7), a.device._local.private_key)
    net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    net.deliver_next()
    net.drop_all()
    net.now += 0.017  # a newer TAI64N timestamp (whitened to 2^24 ns), but within 20 ms of the last initiation
    net.send(twin, ip4("10.0.0.1", "10.0.0.2"))
    net.deliver_next()
    assert b.drops == [DropReason.RATE_LIMITED]
    net.now += 0.02
    net.send(twin, ip4("10.0.0.1", "10.0.0.2"))  # staged; its retransmit is not due yet
    net.advance(6.0)
    assert b.drops == [DropReason.RATE_LIMITED]
    assert len(b.tunnel) >= 1


def test_replayed_data_is_dropped_even_much_later() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"once"))
    recorded = net.in_flight[0]
    net.deliver_all()
    for _ in range(3000):  # push the counter far past the replay window
        net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    net.deliver_all()
    net.deliver(recorded)
    assert b.drops == [DropReason.REPLAYED_COUNTER]


def test_under_load_an_initiation_without_mac2_gets_a_cookie_and_the_retry_is_accepted() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"under load"))
    net.deliver_next(under_load=True)
    assert b.drops == [DropReason.COOKIE_REQUIRED]
    (cookie_reply,) = net.in_flight
    assert len(cookie_reply.data) == 64
    assert cookie_reply.data[0] == 3
    assert cookie_reply.destination == a.endpoint
    net.deliver_next()  # a stores the cookie, sends nothing yet
    assert net.in_flight == []
    net.advance(5.4, deliver=False)
    (retry,) = net.in_flight
    assert retry.data[-16:] != bytes(16)  # mac2 present now
    net.deliver_next(under_load=True)
    net.deliver_all()
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"under load")]
    assert b.drops == [DropReason.COOKIE_REQUIRED]


def test_under_load_a_cookie_is_bound_to_the_source_address() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    net.deliver_next(under_load=True)
    net.deliver_next()
    net.advance(5.4, deliver=False)
    (retry,) = net.drop_all()
    # The same message from another address carries a mac2 that is wrong for that address: a new cookie reply.
    reply, drop = b.device.decapsulate(retry.data, ("198.51.100.1", 4444), net.now, under_load=True)
    assert isinstance(reply, SendDatagram)
    assert reply.endpoint == ("198.51.100.1", 4444)
    assert drop == Drop(DropReason.COOKIE_REQUIRED)
    assert b.device.drops[DropReason.COOKIE_REQUIRED] == 2
    # From the address the cookie was made for, it is accepted.
    (response,) = b.device.decapsulate(retry.data, a.endpoint, net.now, under_load=True)
    assert isinstance(response, SendDatagram)
    assert response.data[0] == 2


def test_under_load_valid_mac2_still_obeys_the_per_source_rate_limit() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    net.deliver_next(under_load=True)
    net.deliver_next()
    net.advance(5.4, deliver=False)
    (retry,) = net.drop_all()
    for _ in range(5):
        b.device.decapsulate(retry.data, a.endpoint, net.now, under_load=True)
    b.device.decapsulate(retry.data, a.endpoint, net.now, under_load=True)
    assert b.device.drops[DropReason.RATE_LIMITED] == 1


def test_cookie_reply_that_does_not_match_our_last_mac1_is_dropped() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    net.deliver_next(under_load=True)
    (reply,) = net.drop_all()
    tampered = bytearray(reply.data)
    tampered[-1] ^= 0x80
    a.device.decapsulate(bytes(tampered), b.endpoint, net.now)
    assert a.device.peer_stats()[b.device.public_key].drops[DropReason.DECRYPT_FAILED] == 1


def test_endpoint_roams_to_the_source_of_authenticated_packets_only() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    new_home = ("203.0.113.5", 40000)
    a.endpoint = new_home
    net.hosts[new_home] = a
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"from a new address"))
    net.deliver_all()
    assert b.device.peer_stats()[a.device.public_key].endpoint == new_home
    net.send(b, ip4("10.0.0.2", "10.0.0.1", b"reply follows"))
    assert net.in_flight[0].destination == new_home
    net.deliver_all()
    assert a.tunnel == [ip4("10.0.0.2", "10.0.0.1", b"reply follows")]
    # Garbage from yet another address does not move the endpoint.
    b.device.decapsulate(b"\x04\x00\x00\x00" + bytes(40), ("198.51.100.7", 1), net.now)
    assert b.device.peer_stats()[a.device.public_key].endpoint == new_home


@pytest.mark.parametrize(
    "packet",
    [ip4("10.0.0.99", "10.0.0.2", b"spoofed v4"), ip6("fd00::99", "fd00::2", b"spoofed v6")],
    ids=["ipv4", "ipv6"],
)
def test_inner_source_outside_the_peers_allowed_ips_is_dropped(packet: bytes) -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    net.send(a, packet)
    net.deliver_all()
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"establish")]
    assert b.drops == [DropReason.DISALLOWED_SOURCE_IP]


@pytest.mark.parametrize(
    "packet",
    [ip4("10.0.0.1", "10.0.0.77"), ip6("fd00::1", "fd00::77")],
    ids=["ipv4", "ipv6"],
)
def test_destination_in_no_allowed_ips_is_dropped_as_no_route(packet: bytes) -> None:
    net = Network()
    a, _ = net.pair()
    net.send(a, packet)
    assert a.drops == [DropReason.NO_ROUTE_TO_PEER]
    assert net.in_flight == []


@pytest.mark.parametrize("packet", [b"", b"\x45" * 19, b"\x60" * 39, b"\x10" * 60], ids=["empty", "v4", "v6", "v1"])
def test_malformed_packets_from_the_tunnel_are_dropped(packet: bytes) -> None:
    net = Network()
    a, _ = net.pair()
    net.send(a, packet)
    assert a.drops == [DropReason.INVALID_IP_PACKET]


def test_inner_packet_claiming_more_bytes_than_it_has_is_dropped() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    lying = bytearray(ip4("10.0.0.1", "10.0.0.2", b"short"))
    lying[2:4] = (500).to_bytes(2, "big")
    net.send(a, bytes(lying))
    net.deliver_all()
    assert b.drops == [DropReason.INVALID_IP_PACKET]


def test_padding_is_stripped_by_the_inner_length() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    packet = ip6("fd00::1", "fd00::2", b"x" * 3)
    net.send(a, packet)
    assert len(net.in_flight[0].data) == 16 + 48 + 16  # 43 bytes padded to 48
    net.deliver_all()
    assert b.tunnel[-1] == packet


def test_mismatched_preshared_keys_fail_the_response() -> None:
    net = Network()
    a, b = net.pair(preshared_key=bytes([7]) * 32)
    replacement = clone(net, b, "b2", b.endpoint, b.device._local.private_key)
    replacement.device.remove_peer(a.device.public_key)
    replacement.device.add_peer(
        PeerConfig(
            a.device.public_key, preshared_key=bytes([8]) * 32, allowed_ips=(ipaddress.ip_network("10.0.0.1/32"),)
        )
    )
    net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    net.deliver_all()
    assert a.drops == [DropReason.DECRYPT_FAILED]
    assert replacement.tunnel == []


def test_matching_preshared_keys_work() -> None:
    net = Network()
    a, b = net.pair(preshared_key=bytes([7]) * 32)
    establish(net, a, b)


def test_bad_peer_configurations_raise_config_error() -> None:
    net = Network()
    a, b = net.pair()
    with pytest.raises(PeerConfigError, match="already configured"):
        a.device.add_peer(PeerConfig(b.device.public_key))
    with pytest.raises(PeerConfigError, match="own public key"):
        a.device.add_peer(PeerConfig(a.device.public_key))
    with pytest.raises(PeerConfigError, match="32 bytes"):
        a.device.add_peer(PeerConfig(b"short"))
    with pytest.raises(PeerConfigError, match="preshared key"):
        a.device.add_peer(PeerConfig(bytes(range(32)), preshared_key=b"x"))
    with pytest.raises(PeerConfigError, match="low-order point"):
        a.device.add_peer(PeerConfig(bytes(32)))
    with pytest.raises(PeerConfigError, match="no peer"):
        a.device.remove_peer(bytes(range(32)))


def test_removed_peer_gets_no_more_traffic_and_its_sessions_are_gone() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"in flight"))
    (in_flight,) = net.drop_all()
    b.device.remove_peer(a.device.public_key)
    net.deliver(in_flight)
    assert b.drops == [DropReason.UNKNOWN_RECEIVER_INDEX]
    net.send(b, ip4("10.0.0.2", "10.0.0.1"))
    assert b.drops[-1] is DropReason.NO_ROUTE_TO_PEER
    assert b.device.next_deadline() is None


def test_cookie_round_trip_with_ipv6_endpoints() -> None:
    net = Network()
    a, b = net.pair(a_endpoint=("2001:db8::1", 51820), b_endpoint=("2001:db8::2", 51821))
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"v6 underlay"))
    net.deliver_next(under_load=True)
    net.deliver_next()
    net.advance(5.4, deliver=False)
    net.deliver_next(under_load=True)
    net.deliver_all()
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"v6 underlay")]
    assert b.device.peer_stats()[a.device.public_key].endpoint == ("2001:db8::1", 51820)


def test_cryptokey_routing_picks_the_peer_with_the_longest_matching_prefix() -> None:
    net = Network()
    a, b = net.pair()
    c = net.add_host("c", ("192.0.2.3", 51822))
    a.device.add_peer(
        PeerConfig(c.device.public_key, allowed_ips=(ipaddress.ip_network("10.0.0.0/24"),), endpoint=c.endpoint)
    )
    c.device.add_peer(PeerConfig(a.device.public_key, allowed_ips=(ipaddress.ip_network("10.0.0.1/32"),)))
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"to b"))
    net.send(a, ip4("10.0.0.1", "10.0.0.3", b"to c"))
    net.deliver_all()
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"to b")]
    assert c.tunnel == [ip4("10.0.0.1", "10.0.0.3", b"to c")]
    # c may not claim b's address as a source: 10.0.0.2/32 belongs to b in a's table.
    net.send(c, ip4("10.0.0.2", "10.0.0.1", b"spoofing b"))
    net.deliver_all()
    assert a.tunnel == []
    assert a.drops == [DropReason.DISALLOWED_SOURCE_IP]


def test_under_load_a_response_without_mac2_gets_a_cookie_and_the_next_round_completes() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"response under load"))
    net.deliver_next()  # initiation reaches b normally
    net.deliver_next(under_load=True)  # a is loaded when b's response arrives
    assert a.drops == [DropReason.COOKIE_REQUIRED]
    (cookie_reply,) = net.in_flight
    assert cookie_reply.destination == b.endpoint
    net.deliver_next()  # b stores the cookie for its messages to a
    net.advance(5.4, deliver=False)  # a retransmits its initiation
    net.deliver_next()
    (response,) = net.in_flight
    assert response.data[-16:] != bytes(16)  # b's new response carries mac2
    net.deliver_next(under_load=True)
    net.deliver_all()
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"response under load")]


def test_allowed_ips_can_grow_and_shrink_under_a_live_session() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    subnet = ipaddress.ip_network("172.18.0.0/16")
    own = (ipaddress.ip_network("10.0.0.1/32"), ipaddress.ip_network("fd00::1/128"))
    b.device.set_allowed_ips(a.device.public_key, (*own, subnet))
    net.send(b, ip4("10.0.0.2", "172.18.0.5", b"to a container"))
    net.send(a, ip4("172.18.0.5", "10.0.0.2", b"its reply"))
    net.deliver_all()
    assert a.tunnel[-1] == ip4("10.0.0.2", "172.18.0.5", b"to a container")
    assert b.tunnel[-1] == ip4("172.18.0.5", "10.0.0.2", b"its reply")
    b.device.set_allowed_ips(a.device.public_key, own)
    net.send(b, ip4("10.0.0.2", "172.18.0.5", b"no route any more"))
    assert b.drops == [DropReason.NO_ROUTE_TO_PEER]
    net.send(a, ip4("172.18.0.5", "10.0.0.2", b"spoofed now"))
    net.deliver_all()
    assert b.drops == [DropReason.NO_ROUTE_TO_PEER, DropReason.DISALLOWED_SOURCE_IP]
    assert b.device.peer_stats()[a.device.public_key].handshakes == 1


def test_allowed_ips_of_an_unknown_peer_cannot_be_set() -> None:
    net = Network()
    a, _ = net.pair()
    with pytest.raises(PeerConfigError, match="no peer"):
        a.device.set_allowed_ips(bytes(32), ())
