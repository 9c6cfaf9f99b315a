"""Two devices in memory: handshakes, data both ways, loss, duplication, reordering."""

from __future__ import annotations

from dmnc.wireguard import DropReason
from tests.unit.wireguard.inmemory import Network, ip4, ip6


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
