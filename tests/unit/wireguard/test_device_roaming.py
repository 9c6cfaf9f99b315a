"""A peer that may not roam anywhere (dmnc's VM peer): its endpoint stays in its address family and on loopback once
learned; authenticated packets that would move it further are dropped as ROAMING_REFUSED. Fake clock and network."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.wireguard import Device, DropReason, Endpoint, SendDatagram
from dmnc.wireguard.roaming import restricted_roam_allowed
from tests.fakes.wireguard_network import WALL_OFFSET, Host, Network, ip4

LOOPBACK = ("127.0.0.1", 40000)
VMNET = ("192.168.106.2", 40000)  # Colima's vmnet network (Lima's default shared network)


def vm_and_host(vm_endpoint: Endpoint) -> tuple[Network, Host, Host]:
    """`vm` dials `host`; the host learns the VM's endpoint from its first handshake, as dmnc does."""
    net = Network()
    vm, host = net.pair(a_endpoint=vm_endpoint, b_knows_a=False, b_lets_a_roam_anywhere=False)
    net.send(vm, ip4("10.0.0.1", "10.0.0.2", b"first"))
    net.deliver_all()
    assert host.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"first")]
    assert endpoint_of(host, vm) == vm_endpoint
    return net, vm, host


def endpoint_of(host: Host, peer: Host) -> Endpoint | None:
    return host.device.peer_stats()[peer.device.public_key].endpoint


def move(net: Network, host: Host, endpoint: Endpoint) -> None:
    host.endpoint = endpoint
    net.hosts[endpoint] = host


def peer_drops(host: Host, peer: Host) -> int:
    return host.device.peer_stats()[peer.device.public_key].drops[DropReason.ROAMING_REFUSED]


@pytest.mark.parametrize(
    ("start", "elsewhere"),
    [
        (LOOPBACK, ("::1", 40000)),  # loopback, other family
        (LOOPBACK, ("192.0.2.9", 40000)),  # off loopback
        (VMNET, ("fd00:106::2", 40000)),  # other family
        (("::1", 40000), ("2001:db8::9", 40000)),  # IPv6 off loopback
    ],
)
def test_data_from_where_the_vm_peer_may_not_roam_is_dropped_and_the_endpoint_stays(
    start: Endpoint, elsewhere: Endpoint
) -> None:
    net, vm, host = vm_and_host(start)
    move(net, vm, elsewhere)
    net.send(vm, ip4("10.0.0.1", "10.0.0.2", b"from elsewhere"))
    net.deliver_all()
    assert host.tunnel == [ip4("10.0.0.1", "10.0.0.2", b"first")]
    assert host.drops == [DropReason.ROAMING_REFUSED]
    assert peer_drops(host, vm) == 1
    assert endpoint_of(host, vm) == start
    # Back where it was, the same session carries traffic again: nothing was consumed by the refused packet.
    move(net, vm, start)
    net.send(vm, ip4("10.0.0.1", "10.0.0.2", b"home again"))
    net.deliver_all()
    assert host.tunnel[-1] == ip4("10.0.0.1", "10.0.0.2", b"home again")


@pytest.mark.parametrize(
    ("start", "allowed"),
    [
        (LOOPBACK, ("127.0.0.1", 40001)),  # a new source port (the forwarder's NAT)
        (LOOPBACK, ("127.0.0.2", 40000)),  # loopback is 127/8
        (LOOPBACK, ("::ffff:127.0.0.1", 40000)),  # the same sender through a dual-stack socket
        (VMNET, ("192.168.106.3", 40000)),  # the VM got another address on its network
        (VMNET, ("127.0.0.1", 40000)),  # onto loopback is not off it
    ],
)
def test_the_vm_peer_still_roams_within_its_family_and_loopback(start: Endpoint, allowed: Endpoint) -> None:
    net, vm, host = vm_and_host(start)
    move(net, vm, allowed)
    net.send(vm, ip4("10.0.0.1", "10.0.0.2", b"moved"))
    net.deliver_all()
    assert host.tunnel[-1] == ip4("10.0.0.1", "10.0.0.2", b"moved")
    assert endpoint_of(host, vm) == allowed
    assert host.drops == []


def test_an_initiation_from_where_the_vm_peer_may_not_roam_changes_nothing() -> None:
    net, vm, host = vm_and_host(LOOPBACK)
    # The VM's key dialing from off the machine: authenticated, yet no answer and no new endpoint.
    impostor = Device(vm.device._local.private_key, rng=net.rng, wall_offset=WALL_OFFSET, timing=net.timing)
    impostor.add_peer(vm.device._peers[host.device.public_key].config)  # white-box: the VM's own configuration
    outputs = impostor.encapsulate(ip4("10.0.0.1", "10.0.0.2", b"via impostor"), net.now)
    (initiation,) = [output for output in outputs if isinstance(output, SendDatagram)]
    answer = host.device.decapsulate(initiation.data, ("192.0.2.66", 51820), net.now)
    assert not any(isinstance(output, SendDatagram) for output in answer)
    assert peer_drops(host, vm) == 1
    assert endpoint_of(host, vm) == LOOPBACK
    net.send(vm, ip4("10.0.0.1", "10.0.0.2", b"session intact"))
    net.deliver_all()
    assert host.tunnel[-1] == ip4("10.0.0.1", "10.0.0.2", b"session intact")


def test_a_peer_allowed_to_roam_anywhere_follows_into_another_family() -> None:
    net = Network()
    a, b = net.pair(a_endpoint=LOOPBACK)
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"first"))
    net.deliver_all()
    move(net, a, ("2001:db8::5", 40000))
    net.send(a, ip4("10.0.0.1", "10.0.0.2", b"moved"))
    net.deliver_all()
    assert endpoint_of(b, a) == ("2001:db8::5", 40000)
    assert b.tunnel[-1] == ip4("10.0.0.1", "10.0.0.2", b"moved")


endpoints = st.tuples(st.ip_addresses().map(str), st.integers(1, 65535))


@given(current=endpoints, source=endpoints)
def test_restricted_roaming_never_changes_family_nor_leaves_loopback(current: Endpoint, source: Endpoint) -> None:
    def family_and_loopback(endpoint: Endpoint) -> tuple[int, bool]:
        address = ipaddress.ip_address(endpoint[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.version, address.is_loopback

    (old_version, old_loopback), (new_version, new_loopback) = family_and_loopback(current), family_and_loopback(source)
    allowed = restricted_roam_allowed(current, source)
    if allowed and current != source:
        assert new_version == old_version
        assert new_loopback or not old_loopback
    if new_version == old_version and (new_loopback or not old_loopback):
        assert allowed


@given(source=endpoints)
def test_the_first_endpoint_is_always_learned(source: Endpoint) -> None:
    assert restricted_roam_allowed(None, source)


def test_an_unparsable_address_is_refused() -> None:
    assert not restricted_roam_allowed(LOOPBACK, ("not-an-address", 1))
