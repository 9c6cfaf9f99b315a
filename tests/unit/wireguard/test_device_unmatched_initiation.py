"""The initiation that arrives before its sender is a peer (the Docker VM's first one, sent before the setup result
names its key): kept, one at most, and answered when that peer is added in time."""

from __future__ import annotations

import ipaddress

from dmnc.wireguard import DropReason, Output, PeerConfig, SendDatagram
from dmnc.wireguard.device import UNMATCHED_INITIATION_MAX_AGE, _UnmatchedInitiation
from tests.fakes.wireguard_network import Host, InFlight, Network, ip4


def strangers(net: Network, count: int = 1) -> tuple[Host, list[Host]]:
    """A responder `b` and `count` initiators that know b, while b knows none of them."""
    b = net.add_host("b", ("192.0.2.2", 51820))
    initiators = []
    for number in range(count):
        initiator = net.add_host(f"a{number}", ("192.0.2.10", 40000 + number))
        initiator.device.add_peer(
            PeerConfig(b.device.public_key, allowed_ips=(ipaddress.ip_network("10.0.0.2/32"),), endpoint=b.endpoint)
        )
        initiators.append(initiator)
    return b, initiators


def initiate(net: Network, initiator: Host) -> InFlight:
    net.send(initiator, ip4("10.0.0.1", "10.0.0.2", b"first"))
    (initiation,) = net.drop_all()
    assert initiation.data[0] == 1
    return initiation


def add_as_peer(b: Host, initiator: Host) -> None:
    b.device.add_peer(PeerConfig(initiator.device.public_key, allowed_ips=(ipaddress.ip_network("10.0.0.1/32"),)))


def kept_initiation(host: Host) -> _UnmatchedInitiation | None:
    """White-box: the initiation the device keeps for a peer not yet added."""
    return host.device._unmatched_initiation


def is_response_to(outputs: list[Output], initiator: Host) -> bool:
    return [(output.endpoint, output.data[0]) for output in outputs if isinstance(output, SendDatagram)] == [
        (initiator.endpoint, 2)
    ]


def test_initiation_from_a_key_added_in_time_is_answered_and_the_session_comes_up() -> None:
    net = Network()
    b, (a,) = strangers(net)
    net.deliver(initiate(net, a))
    assert b.drops == [DropReason.UNKNOWN_PEER]
    net.now += UNMATCHED_INITIATION_MAX_AGE  # the bound itself is still in time
    add_as_peer(b, a)
    outputs = b.device.answer_unmatched_initiation(net.now)
    assert is_response_to(outputs, a)
    net.handle(b, outputs)
    net.deliver_all()
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"first")]
    assert b.device.peer_stats()[a.device.public_key].handshakes == 1
    assert b.device.answer_unmatched_initiation(net.now) == []  # answered once only


def test_initiation_older_than_the_bound_is_not_answered_and_forgotten() -> None:
    net = Network()
    b, (a,) = strangers(net)
    net.deliver(initiate(net, a))
    net.now += UNMATCHED_INITIATION_MAX_AGE + 0.001
    add_as_peer(b, a)
    assert b.device.answer_unmatched_initiation(net.now) == []
    assert kept_initiation(b) is None  # nothing left to answer later


def test_initiation_is_not_answered_when_another_key_is_added_and_kept_for_its_own() -> None:
    net = Network()
    b, (a, other) = strangers(net, 2)
    net.deliver(initiate(net, a))
    add_as_peer(b, other)
    assert b.device.answer_unmatched_initiation(net.now) == []
    net.now += 1.0
    add_as_peer(b, a)
    assert is_response_to(b.device.answer_unmatched_initiation(net.now), a)


def test_only_the_newest_initiation_is_kept() -> None:
    net = Network()
    b, initiators = strangers(net, 3)
    for initiator in initiators:
        net.deliver(initiate(net, initiator))
        net.now += 0.1
    for initiator in initiators:
        add_as_peer(b, initiator)
    assert is_response_to(b.device.answer_unmatched_initiation(net.now), initiators[-1])
    assert b.device.answer_unmatched_initiation(net.now) == []  # the earlier ones were replaced, not queued


def test_a_malformed_initiation_is_not_kept() -> None:
    net = Network()
    b, (a,) = strangers(net)
    initiation = initiate(net, a)
    for offset in (8, 116):  # inside the ephemeral key (decryption fails), the first byte of mac1
        tampered = bytearray(initiation.data)
        tampered[offset] ^= 0x01
        b.device.decapsulate(bytes(tampered), a.endpoint, net.now)
    assert b.device.drops[DropReason.UNKNOWN_PEER] == 0
    add_as_peer(b, a)
    assert b.device.answer_unmatched_initiation(net.now) == []


def test_an_initiation_answered_with_a_cookie_or_rate_limited_is_not_kept() -> None:
    net = Network()
    b, (a,) = strangers(net)
    net.deliver(initiate(net, a), under_load=True)
    assert b.drops == [DropReason.COOKIE_REQUIRED]
    assert kept_initiation(b) is None  # the cookie reply was all it got
    net.deliver_all()  # the cookie reply reaches a: its retransmission carries a valid mac2
    net.advance(UNMATCHED_INITIATION_MAX_AGE + 0.4, deliver=False)
    (retry,) = net.drop_all()
    # Each source may spend a burst of handshakes at once (whitepaper 5.3): these are kept, the next is not.
    for _ in range(5):
        b.device.decapsulate(retry.data, a.endpoint, net.now, under_load=True)
    kept = kept_initiation(b)
    assert kept is not None
    net.now += 0.001
    b.device.decapsulate(retry.data, a.endpoint, net.now, under_load=True)
    assert b.device.drops[DropReason.RATE_LIMITED] == 1
    assert kept_initiation(b) is kept
