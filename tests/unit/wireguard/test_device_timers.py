"""Session lifetime on a fake clock: rekey, expiry, erasing keys, keepalives (whitepaper section 6)."""

from __future__ import annotations

from dmnc.wireguard import DropReason, Timing, constants
from tests.fakes.wireguard_network import Host, InFlight, Network, ip4

KEEPALIVE_SIZE = 32  # header + empty payload + tag


def establish(net: Network, a: Host, b: Host) -> None:
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"establish"))
    net.deliver_all()
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"establish")]


def kinds(flights: list[InFlight]) -> list[int]:
    return [flight.data[0] for flight in flights]


def handshakes(host: Host, other: Host) -> int:
    return host.device.peer_stats()[other.device.public_key].handshakes


def test_initiator_rekeys_after_120_seconds_of_traffic_without_losing_packets() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    start = net.now
    sent = []
    for second in range(1, 200):
        net.advance(1.0)
        packet = ip4("10.0.0.1", "10.0.0.2", second.to_bytes(2, "big"))
        sent.append(packet)
        net.send(a, packet)
        net.send(b, ip4("10.0.0.2", "10.0.0.1", second.to_bytes(2, "big")))
        if second == 119:
            assert handshakes(a, b) == 1
        net.deliver_all()
    assert b.tunnel[1:] == sent
    assert len(a.tunnel) == 199
    assert a.drops == []
    assert b.drops == []
    first_rekey = min(f.sent_at for f in net.sent_log if f.data[0] == 1 and f.sent_at > start)
    assert first_rekey - start == 120.0
    assert handshakes(a, b) == 2
    assert handshakes(b, a) == 2


def test_session_expires_after_180_seconds_and_a_new_handshake_is_needed() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    net.advance(179.0)
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"last moment"))
    # Still sent as data with the old session (and, past REKEY_AFTER_TIME, with a new initiation beside it).
    (late,) = [flight for flight in net.drop_all() if flight.data[0] == 4]
    net.now += 1.5  # delivered after REJECT_AFTER_TIME
    net.deliver(late)
    assert b.drops == [DropReason.EXPIRED_KEYPAIR]
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"needs new session"))
    assert net.in_flight == []  # queued: an initiation went out 1.5 s ago, the next waits for REKEY_TIMEOUT
    net.advance(6.0)
    assert b.tunnel[-1] == ip4("10.0.0.1", "10.0.0.2", b"needs new session")
    assert handshakes(a, b) == 2


def test_responder_that_only_sends_starts_a_handshake_when_its_session_expires() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    net.advance(181.0, deliver=False)
    net.drop_all()
    net.send(b, ip4("10.0.0.2", "10.0.0.1", b"from the responder"))
    assert kinds(net.in_flight) == [1]
    net.deliver_all()
    assert a.tunnel[-1] == ip4("10.0.0.2", "10.0.0.1", b"from the responder")


def test_key_material_is_erased_after_three_times_reject_after_time() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"captured"))
    (captured,) = net.drop_all()
    peer_of_a = next(iter(a.device._peers.values()))  # white-box: check the bytes really are gone
    keypair = peer_of_a.keypairs.current
    assert keypair is not None
    net.advance(539.0)
    assert peer_of_a.keypairs.current is keypair
    net.advance(2.0)
    assert peer_of_a.keypairs.all() == []
    assert keypair.send_key == bytearray(32)
    assert keypair.receive_key == bytearray(32)
    net.deliver(captured)
    assert b.drops == [DropReason.UNKNOWN_RECEIVER_INDEX]
    assert b.device.drops[DropReason.UNKNOWN_RECEIVER_INDEX] == 1


def test_receiver_of_data_sends_a_keepalive_after_10_seconds_of_silence() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    start = net.now
    net.advance(9.99, deliver=False)
    assert net.in_flight == []
    net.advance(0.02, deliver=False)
    (keepalive,) = net.drop_all()
    assert keepalive.source == b.endpoint
    assert len(keepalive.data) == KEEPALIVE_SIZE
    assert keepalive.sent_at - start == 10.0
    net.deliver(keepalive)
    assert a.tunnel == []  # keepalives never reach the tunnel
    net.advance(100.0, deliver=False)
    assert all(f.source == a.endpoint for f in net.in_flight)  # only one keepalive from b


def test_sender_without_answer_starts_a_new_handshake_after_keepalive_plus_rekey_timeout() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)  # a sent data at `start`; b's answer (its keepalive at +10 s) is lost below
    start = net.now
    net.advance(20.0, deliver=False)
    from_a = [f for f in net.in_flight if f.source == a.endpoint]
    assert from_a[0].data[0] == 1
    assert 15.0 <= from_a[0].sent_at - start < 15.334


def test_persistent_keepalive_goes_out_every_interval_while_idle() -> None:
    net = Network()
    a, b = net.pair(a_keepalive=25)
    # With an endpoint and persistent keepalive, a contacts b at once (the deadline is already due).
    deadline = a.device.next_deadline()
    assert deadline is not None
    assert deadline <= net.now
    net.advance(0.0)
    assert handshakes(a, b) == 1
    net.drop_all()
    start = net.now
    net.advance(80.0)
    keepalives = [f for f in net.sent_log if f.source == a.endpoint and f.sent_at > start]
    assert [f.sent_at - start for f in keepalives] == [25.0, 50.0, 75.0]
    assert all(len(f.data) == KEEPALIVE_SIZE for f in keepalives)


def test_idle_device_has_no_deadline() -> None:
    net = Network()
    a, b = net.pair()
    assert a.device.next_deadline() is None
    establish(net, a, b)
    net.advance(600.0)
    assert a.device.next_deadline() is None
    assert b.device.next_deadline() is None


def test_packets_in_flight_during_a_rekey_are_still_accepted_with_the_previous_session() -> None:
    net = Network()
    a, b = net.pair()
    establish(net, a, b)
    net.advance(121.0)
    net.send(b, ip4("10.0.0.2", "10.0.0.1", b"old session, late"))
    (late,) = net.drop_all()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"triggers rekey"))
    net.deliver_all()
    assert handshakes(a, b) == 2
    net.deliver(late)
    assert a.tunnel[-1] == ip4("10.0.0.2", "10.0.0.1", b"old session, late")
    assert a.drops == []


def test_initiator_rekeys_after_rekey_after_messages() -> None:
    net = Network(timing=Timing(rekey_after_messages=10))
    a, b = net.pair()
    establish(net, a, b)  # message 0
    net.advance(6.0)  # past REKEY_TIMEOUT since the first handshake, so a new one may start
    for n in range(1, 10):
        net.send(a, ip4("10.0.0.1", "10.0.0.2", bytes([n])))
    assert kinds(net.in_flight) == [4] * 9
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"tenth"))
    assert kinds(net.in_flight)[-2:] == [4, 1]  # message 10 goes out, and a new handshake starts
    net.deliver_all()
    assert handshakes(a, b) == 2
    assert len(b.tunnel) == 11


def test_no_packet_is_sent_or_accepted_at_reject_after_messages() -> None:
    net = Network(timing=Timing(reject_after_messages=5))
    a, b = net.pair()
    establish(net, a, b)  # counter 0
    net.advance(6.0)  # past REKEY_TIMEOUT since the first handshake, so a new one may start
    for n in range(1, 5):
        net.send(a, ip4("10.0.0.1", "10.0.0.2", bytes([n])))
    assert kinds(net.in_flight) == [4] * 4
    net.drop_all()
    # Counter 5 would reach the limit: the packet waits for a new session instead.
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"waits"))
    assert kinds(net.in_flight) == [1]
    net.deliver_all()
    assert b.tunnel[-1] == ip4("10.0.0.1", "10.0.0.2", b"waits")


def test_receiver_rejects_counters_at_or_past_the_limit() -> None:
    net = Network(timing=Timing(reject_after_messages=5))
    a, b = net.pair()
    establish(net, a, b)
    net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    (datagram,) = net.drop_all()
    forged = bytearray(datagram.data)
    forged[8:16] = (5).to_bytes(8, "little")  # counter 5 (authentication would fail anyway; the limit is first)
    b.device.decapsulate(bytes(forged), a.endpoint, net.now)
    assert b.device.peer_stats()[a.device.public_key].drops[DropReason.EXPIRED_KEYPAIR] == 1


def test_initiator_that_only_receives_rekeys_shortly_before_the_session_expires() -> None:
    # The initiator's own keepalives would trigger the usual rekey at REKEY_AFTER_TIME; pushed past 165 s here, the
    # receive-side rule is what starts the handshake.
    net = Network(timing=Timing(rekey_after_time=175.0))
    a, b = net.pair()
    establish(net, a, b)  # a initiated
    start = net.now
    for _ in range(172):
        net.advance(1.0)
        net.send(b, ip4("10.0.0.2", "10.0.0.1", b"one-way"))
    net.deliver_all()
    rekeys = [f for f in net.sent_log if f.data[0] == 1 and f.sent_at > start]
    # REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT = 165 s after the session began, and only once.
    assert [f.sent_at - start for f in rekeys] == [165.0]
    assert rekeys[0].source == a.endpoint
    assert len(a.tunnel) == 172
    assert a.drops == []


def exchange_every_second(net: Network, a: Host, b: Host, seconds: int) -> tuple[list[bytes], list[bytes]]:
    """Both sides send one packet a second with the network delivering everything; returns (a's, b's) packets."""
    from_a, from_b = [], []
    for second in range(seconds):
        from_a.append(ip4("10.0.0.1", "10.0.0.2", second.to_bytes(2, "big")))
        from_b.append(ip4("10.0.0.2", "10.0.0.1", second.to_bytes(2, "big")))
        net.send(a, from_a[-1])
        net.send(b, from_b[-1])
        net.advance(1.0)
    return from_a, from_b


def test_response_arriving_after_the_initiator_gave_up_is_refused() -> None:
    # Found by test_device_chaos.py: b answers a's last initiation, the answer arrives 150 s later. Accepted, it
    # would give a a session dated 150 s after b's copy, which b expires (REJECT_AFTER_TIME after its own date)
    # long before a thinks of rekeying: a's packets would be lost until a noticed the silence.
    net = Network(seed=0)
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"never arrives"))
    net.advance(88.0, deliver=False)
    initiations = net.drop_all()
    assert kinds(initiations) == [1] * 18  # REKEY_ATTEMPT_TIME / REKEY_TIMEOUT initiations
    net.deliver(initiations[-1])
    (response,) = net.drop_all()
    net.advance(151.0, deliver=False)
    assert a.drops == [DropReason.HANDSHAKE_GAVE_UP]
    net.deliver(response)
    assert a.drops == [DropReason.HANDSHAKE_GAVE_UP, DropReason.UNEXPECTED_MESSAGE]
    assert net.in_flight == []  # no session, so nothing confirms it to b
    # From now on the pair talks, also past the moment b's copy of the refused session would have expired.
    from_a, from_b = exchange_every_second(net, a, b, 60)
    assert b.tunnel == from_a
    assert a.tunnel == from_b
    assert handshakes(a, b) == 1


def test_response_processed_after_its_retransmit_deadline_is_refused_even_before_the_tick() -> None:
    # The I/O layer may handle a datagram before the overdue tick (after the host slept, say): the initiation the
    # response answers is about to be replaced all the same, and the response may be arbitrarily late.
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"waits"))
    net.deliver_next()  # b answers
    net.now += constants.REKEY_TIMEOUT + constants.REKEY_TIMEOUT_JITTER_MAX_MS / 1000  # no tick in between
    net.deliver_next()
    assert a.drops == [DropReason.UNEXPECTED_MESSAGE]
    net.advance(0.0)  # the overdue retransmit goes out and completes the handshake
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"waits")]
    assert handshakes(a, b) == 1


def test_response_just_before_its_retransmit_deadline_completes_the_handshake() -> None:
    net = Network()
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"waits"))
    net.deliver_next()
    deadline = a.device.next_deadline()
    assert deadline is not None
    net.now = deadline - 0.001
    net.deliver_all()
    assert a.drops == []
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"waits")]
