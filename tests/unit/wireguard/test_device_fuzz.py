"""Hypothesis against decapsulate: no input bytes raise, and none disturb an established session."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmnc.wireguard import Device, Drop, SendDatagram
from tests.fakes.wireguard_network import Host, Network, ip4

SIZES = {1: 148, 2: 92, 3: 64}


def established() -> tuple[Network, Host, Host]:
    net = Network(seed=7)
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"establish"))
    net.deliver_all()
    return net, a, b


def assert_session_works(net: Network, a: Host, b: Host) -> None:
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"still there?"))
    net.send(b, ip4("10.0.0.2", "10.0.0.1", b"yes"))
    net.deliver_all()
    assert b.tunnel[-1] == ip4("10.0.0.1", "10.0.0.2", b"still there?")
    assert a.tunnel[-1] == ip4("10.0.0.2", "10.0.0.1", b"yes")


def typed_garbage() -> st.SearchStrategy[bytes]:
    """Bytes that get past the type check: a valid type and, for handshakes, the exact size."""
    handshake = st.sampled_from(sorted(SIZES)).flatmap(
        lambda kind: st.binary(min_size=SIZES[kind] - 4, max_size=SIZES[kind] - 4).map(
            lambda body: bytes([kind, 0, 0, 0]) + body
        )
    )
    transport = st.binary(min_size=0, max_size=120).map(lambda body: b"\x04\x00\x00\x00" + body)
    return st.one_of(handshake, transport, st.binary(max_size=200))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams=st.lists(typed_garbage(), max_size=12), under_load=st.booleans())
def test_arbitrary_datagrams_never_raise_and_leave_the_session_working(
    datagrams: list[bytes], under_load: bool
) -> None:
    net, a, b = established()
    for datagram in datagrams:
        for target, source in ((b, a.endpoint), (a, b.endpoint)):
            outputs = target.device.decapsulate(datagram, source, net.now, under_load=under_load)
            # Garbage can at most earn a cookie reply; it never reaches the tunnel.
            assert all(isinstance(output, Drop | SendDatagram) for output in outputs)
            assert all(output.data[0] == 3 for output in outputs if isinstance(output, SendDatagram))
    assert_session_works(net, a, b)


def recorded_messages() -> dict[str, tuple[bytes, str]]:
    """One real message of each type, with the host ("a" or "b") it was sent to."""
    net = Network(seed=11)
    a, _b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"first"))
    initiation = net.deliver_next()
    response = net.deliver_next()
    data = net.deliver_next()
    net.advance(200.0)
    net.send(a, ip4("10.0.0.1", "10.0.0.2"))
    net.deliver_next(under_load=True)
    (cookie,) = net.drop_all()
    return {
        "initiation": (initiation.data, "b"),
        "response": (response.data, "a"),
        "data": (data.data, "b"),
        "cookie": (cookie.data, "a"),
    }


RECORDED = recorded_messages()


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(RECORDED)))
    message = bytearray(RECORDED[name][0])
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "overwrite"]))
    if kind == "flip":
        for position in draw(st.lists(st.integers(0, len(message) - 1), min_size=1, max_size=4)):
            message[position] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del message[draw(st.integers(0, len(message) - 1)) :]
    elif kind == "extend":
        message += draw(st.binary(min_size=1, max_size=32))
    else:
        start = draw(st.integers(0, len(message) - 1))
        patch = draw(st.binary(min_size=1, max_size=16))
        message[start : start + len(patch)] = patch
    return name, bytes(message)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated=st.lists(mutations(), min_size=1, max_size=6), under_load=st.booleans())
def test_mutated_valid_messages_never_raise_and_leave_the_session_working(
    mutated: list[tuple[str, bytes]], under_load: bool
) -> None:
    # The recorded messages belong to another pair of devices; replay them into a fresh pair with the same seed so
    # keys match and a mutation can reach the deepest checks (mac1, decryption, replay, routing).
    net = Network(seed=11)
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"first"))
    net.deliver_all()
    for name, message in mutated:
        if message == RECORDED[name][0]:
            continue
        target, source = (b, a.endpoint) if RECORDED[name][1] == "b" else (a, b.endpoint)
        outputs = target.device.decapsulate(message, source, net.now, under_load=under_load)
        assert all(isinstance(output, Drop | SendDatagram) for output in outputs)
    assert_session_works(net, a, b)


def test_recorded_messages_are_genuine_for_the_replayed_pair() -> None:
    # Guards the test above: with the same seed, the recorded data message decrypts in the fresh pair, so the
    # mutations really are near-misses of valid input and not garbage for unrelated keys.
    net = Network(seed=11)
    a, b = net.pair()
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"first"))
    assert net.in_flight[0].data == RECORDED["initiation"][0]
    net.deliver_all()
    assert b.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"first")]


def test_is_handshake_message_classifies_by_type_and_reserved_bytes() -> None:
    assert Device.is_handshake_message(RECORDED["initiation"][0])
    assert Device.is_handshake_message(RECORDED["response"][0])
    assert Device.is_handshake_message(RECORDED["cookie"][0])
    assert not Device.is_handshake_message(RECORDED["data"][0])
    assert not Device.is_handshake_message(b"\x01\x00\x00\x01" + bytes(144))
    assert not Device.is_handshake_message(b"\x01")
    assert not Device.is_handshake_message(b"")
