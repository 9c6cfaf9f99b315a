"""Two devices in memory: handshakes, data both ways, loss, duplication, reordering."""

from __future__ import annotations

import itertools

from dmnc.wireguard import DropReason
from tests.fakes.wireguard_network import Host, InFlight, Network, ip4, ip6


def test_first_packet_triggers_handshake_and_is_delivered_after_it() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"first"))
    assert [len(f.data) for f in net.in_flight] == [148]
    net.deliver_all()
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"first")]
    stats_a = a.device.peer_stats()[b.device.public_key]
    stats_b = b.device.peer_stats()[a.device.public_key]
    assert stats_a.handshakes == 1
    assert stats_b.handshakes == 1
    assert stats_a.last_handshake == net.now


def test_data_flows_both_ways_over_ipv4_and_ipv6_after_handshake() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    net.deliver_all()
    net.send(b, ip6("fd00::2", "fd00::1", b"v6 back"))
    net.send(a, ip6("fd00::1", "fd00::2", b"v6 there"))
    net.deliver_all()
    assert a.tunnel == [ip6("fd00::2", "fd00::1", b"v6 back")]
    assert b.tunnel[-1] == ip6("fd00::1", "fd00::2", b"v6 there")
    assert a.drops == []
    assert b.drops == []


def test_handshake_initiated_by_the_side_that_only_learns_the_endpoint_later() -> None:
    net = Network()
    a, b = net.pair(a_knows_b=False)
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"waiting"))
    assert net.in_flight == []
    assert a.drops == [DropReason.NO_ENDPOINT]
    net.send(b, ip4("10.0.0.2", "10.0.0.1", b"hello from b"))
    net.deliver_all()
    assert a.tunnel == [ip4("10.0.0.2", "10.0.0.1", b"hello from b")]
    # The queued packet of a went out once b's session was confirmed.
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"waiting")]


def establish(net: Network, a: Host, b: Host) -> None:
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"establish"))
    net.deliver_all()
    assert b.tunnel[-1] == ip4("10.0.0.1", "10.0.0.2", b"establish")


def initiations(flights: list[InFlight]) -> list[InFlight]:
    return [flight for flight in flights if flight.data[0] == 1]


def test_handshake_from_the_other_side_works_the_same() -> None:
    net = Network()
    a, b = net.pair()
    net.send(b, ip4("10.0.0.2", "10.0.0.1", b"from b"))
    net.deliver_all()
    assert a.tunnel == [ip4("10.0.0.2", "10.0.0.1", b"from b")]
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"answer"))
    net.deliver_all()
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"answer")]


def test_simultaneous_initiations_converge_after_a_retransmit() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"a first"))
    net.send(b, ip4("10.0.0.2", "10.0.0.1", b"b first"))
    assert len(initiations(net.in_flight)) == 2
    net.deliver_all()
    # Each side answered the other's initiation, which superseded its own: both responses miss their handshake.
    assert a.tunnel == []
    assert b.tunnel == []
    net.advance(6.0)
    assert a.tunnel == [ip4("10.0.0.2", "10.0.0.1", b"b first")]
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"a first")]


def test_lost_initiation_is_retransmitted_after_rekey_timeout_plus_jitter() -> None:
    net = Network()
    a, b = net.pair()
    start = net.now
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"survives"))
    net.drop_all()
    net.advance(4.99, deliver=False)
    assert net.in_flight == []
    while not net.in_flight:
        net.advance(0.01, deliver=False)
    assert 5.0 <= net.now - start <= 5.334 + 0.01
    (_retransmit,) = initiations(net.in_flight)
    net.deliver_all()
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"survives")]
    assert a.device.peer_stats()[b.device.public_key].handshakes == 1


def test_lost_response_is_recovered_by_the_retransmitted_initiation() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"survives"))
    net.deliver_next()  # initiation reaches b
    (response,) = net.drop_all()
    assert response.data[0] == 2
    net.advance(6.0)
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"survives")]
    assert b.drops == []


def test_duplicated_initiation_is_dropped_as_stale_and_the_session_survives() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"once"))
    initiation = net.in_flight[0]
    net.deliver_all()
    net.now += 1.0
    net.deliver(initiation)
    assert b.drops == [DropReason.STALE_TIMESTAMP]
    assert b.device.peer_stats()[a.device.public_key].drops[DropReason.STALE_TIMESTAMP] == 1
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"still works"))
    net.deliver_all()
    assert b.tunnel[-1] == ip4("10.0.0.1", "10.0.0.2", b"still works")


def test_duplicated_data_is_dropped_as_replayed() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"twice"))
    duplicate = net.in_flight[0]
    net.deliver_all()
    net.deliver(duplicate)
    assert b.tunnel.count(ip4("10.0.0.1", "10.0.0.2", b"twice")) == 1
    assert b.drops == [DropReason.REPLAYED_COUNTER]


def test_reordered_data_is_all_delivered() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    packets = [ip4("10.0.0.1", "10.0.0.2", bytes([n]) * n) for n in range(1, 30)]
    for packet in packets:
        net.send(a, packet)
    net.in_flight.reverse()
    net.deliver_all()
    assert sorted(b.tunnel[1:]) == sorted(packets)
    assert b.drops == []


def test_packets_sent_before_the_handshake_are_queued_and_all_delivered_in_order() -> None:
    net = Network()
    a, b = net.pair()
    packets = [ip4("10.0.0.1", "10.0.0.2", bytes([n])) for n in range(10)]
    for packet in packets:
        net.send(a, packet)
    assert len(net.in_flight) == 1  # one initiation, not one per packet
    net.deliver_all()
    assert b.tunnel == packets


def test_queue_overflow_drops_the_oldest_packets() -> None:
    net = Network()
    a, b = net.pair()
    packets = [ip4("10.0.0.1", "10.0.0.2", n.to_bytes(2, "big")) for n in range(130)]
    for packet in packets:
        net.send(a, packet)
    assert a.drops == [DropReason.QUEUE_FULL, DropReason.QUEUE_FULL]
    net.deliver_all()
    assert b.tunnel == packets[2:]


def test_retransmits_are_jittered_and_give_up_after_rekey_attempt_time() -> None:
    net = Network()
    a, _b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"never arrives"))
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"nor this"))
    net.advance(120.0, deliver=False)
    times = [flight.sent_at for flight in initiations(net.drop_all())]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(times) == 18  # REKEY_ATTEMPT_TIME / REKEY_TIMEOUT initiations in all
    assert all(5.0 <= gap < 5.334 for gap in gaps)
    assert len({round(gap, 3) for gap in gaps}) > 1  # jitter: not all retransmits wait the same
    assert 90.0 <= times[-1] - times[0] + gaps[-1] < 90 + 18 * 0.334
    assert a.drops == [DropReason.HANDSHAKE_GAVE_UP, DropReason.HANDSHAKE_GAVE_UP]
    # Given up: a new packet starts a fresh round of attempts.
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"new try"))
    assert len(initiations(net.in_flight)) == 1
