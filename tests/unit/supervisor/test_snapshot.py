"""The status snapshot from real parts: its drop names are exactly the ones dmnc/control/messages.py documents."""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from dmnc.config import ListenAddress, format_host_port
from dmnc.control.messages import TunnelStatus
from dmnc.routes.reconcile import ReconcilerStatus
from dmnc.supervisor.docker_watch import DockerState
from dmnc.supervisor.snapshot import build_snapshot
from dmnc.supervisor.vm_keeper import VmSide
from dmnc.tunnel.datapath import TunnelCounters
from dmnc.tunnel.flowfilter import FilterDrop
from dmnc.wireguard import DropReason, encode_key
from tests.fakes.wireguard_network import Network, ip4


def documented_drop_names() -> set[str]:
    """The names TunnelStatus's docstring lists (its last paragraph): the contract of `dmnc status --json`."""
    doc = TunnelStatus.__doc__
    assert doc is not None
    listing = doc.strip().split("\n\n")[-1]
    names = {name.strip() for name in listing.split(",")}
    assert all(re.fullmatch(r"[a-z0-9_]+", name) for name in names), names
    return names


def test_the_documented_drop_names_are_exactly_what_the_service_can_emit() -> None:
    emitted = (
        {reason.name.lower() for reason in DropReason}
        | {reason.name.lower() for reason in FilterDrop}
        | {field.name for field in dataclasses.fields(TunnelCounters)}
    )
    assert documented_drop_names() == emitted


def test_a_snapshot_of_a_real_device_names_its_drops_as_documented() -> None:
    net = Network()
    host, vm = net.pair()
    vm_peer = host.device.peer_stats()[vm.device.public_key]
    net.send(vm, ip4("10.0.0.2", "10.0.0.1", b"establish"))
    net.deliver_all()
    net.send(vm, ip4("10.0.0.2", "10.0.0.1", b"once"))
    recorded = net.in_flight[0]
    net.deliver_all()
    net.deliver(recorded)  # the same transport counter again: a replay
    net.handle(host, host.device.decapsulate(b"\x07" * 40, vm.endpoint, net.now))  # an unknown message type
    assert host.drops == [DropReason.REPLAYED_COUNTER, DropReason.UNKNOWN_TYPE]

    snapshot = build_snapshot(
        now=net.now + 2.0,
        interface="utun4",
        listen=ListenAddress(ipaddress.IPv4Address("192.0.2.1"), 41000, port_explicit=True),
        device=host.device,
        counters=TunnelCounters(udp_send_failed=2),
        filter_drops={FilterDrop.INBOUND_NOT_ALLOWED: 3, FilterDrop.ROUTER_MESSAGE: 0},
        vm=VmSide(vm_peer, vm.device.public_key, "userspace", "host.docker.internal"),
        docker=DockerState(),
        routes=ReconcilerStatus(routed=frozenset(), subnets=(), overlaps=(), passes=0, last_error=None),
    )

    drops = snapshot.tunnel.drops
    assert drops == {"replayed_counter": 1, "unknown_type": 1, "inbound_not_allowed": 3, "udp_send_failed": 2}
    assert set(drops) <= documented_drop_names()
    assert snapshot.tunnel.endpoint == format_host_port(*vm.endpoint)
    assert snapshot.tunnel.last_handshake_age_s is not None
    assert snapshot.tunnel.last_handshake_age_s >= 2.0
    assert snapshot.tunnel.rx_bytes == vm_peer.rx_bytes > 0
    assert snapshot.vm.public_key == encode_key(vm.device.public_key)
    assert snapshot.tunnel.listen == "192.0.2.1:41000"
