"""The VM peer's allowed IPs follow the routes: a subnet is the peer's before its route exists and until after the
route is gone."""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Sequence

import trio

from dmnc.routes.manager import Destination
from dmnc.routes.policy import PolicyConfig
from dmnc.routes.reconcile import RouteReconciler
from dmnc.supervisor.peer_subnets import VM_TUNNEL_NETWORKS, VmPeerSubnets
from dmnc.wireguard import Device, PeerConfig, generate_private_key
from tests.fakes.routes import FakeRouteManager
from tests.unit.routes.test_reconcile import network

net = ipaddress.ip_network
VM_KEY = Device(generate_private_key(os.urandom), rng=os.urandom, wall_offset=0.0).public_key


class CheckedPeerSubnets(VmPeerSubnets):
    """Checks at every call that no route of the table lacks its subnet in the peer's allowed IPs."""

    def __init__(self, device: Device, routes: FakeRouteManager) -> None:
        super().__init__(device)
        self.routes = routes
        self.calls: list[tuple[str, tuple[Destination, ...]]] = []

    def before_add(self, destinations: Sequence[Destination]) -> None:
        assert set(destinations).isdisjoint(self.routes_added_since_last_call())
        super().before_add(destinations)
        self.calls.append(("before_add", tuple(destinations)))
        self.check()

    def after_delete(self, destinations: Sequence[Destination]) -> None:
        assert set(destinations).isdisjoint(self.table())
        super().after_delete(destinations)
        self.calls.append(("after_delete", tuple(destinations)))
        self.check()

    def routes_added_since_last_call(self) -> set[Destination]:
        return self.table() - set(self.allowed_ips())

    def table(self) -> set[Destination]:
        return {route.destination for route in self.routes._routes.values() if route.ours}

    def check(self) -> None:
        config = self._device._peers[VM_KEY].config
        assert set(config.allowed_ips) == set(self.allowed_ips())
        assert self.table() <= set(self.allowed_ips())


async def test_the_peer_owns_exactly_the_routed_subnets_at_every_step(nursery: trio.Nursery) -> None:
    device = Device(generate_private_key(os.urandom), rng=os.urandom, wall_offset=0.0)
    routes = FakeRouteManager()
    subnets = CheckedPeerSubnets(device, routes)
    device.add_peer(PeerConfig(VM_KEY, allowed_ips=subnets.allowed_ips()))
    subnets.attach(VM_KEY)
    reconciler = RouteReconciler(routes, PolicyConfig(), hooks=subnets)
    await nursery.start(reconciler.run)
    routes.refuse[net("172.23.0.0/16")] = errno.EPERM

    reconciler.set_networks([network("a", "172.20.0.0/16", "fd00:a::/64"), network("b", "172.21.0.0/16")])
    await reconciler.settled()
    assert set(subnets.allowed_ips()) == {
        *VM_TUNNEL_NETWORKS,
        net("172.20.0.0/16"),
        net("fd00:a::/64"),
        net("172.21.0.0/16"),
    }

    reconciler.set_networks([network("a", "172.20.0.0/16", "fd00:a::/64"), network("c", "172.23.0.0/16")])
    await reconciler.settled()
    # b's route is gone and so is its subnet; c's route was refused, so the peer does not keep it either.
    assert set(subnets.allowed_ips()) == {*VM_TUNNEL_NETWORKS, net("172.20.0.0/16"), net("fd00:a::/64")}
    assert ("before_add", (net("172.23.0.0/16"),)) in subnets.calls
    assert ("after_delete", (net("172.23.0.0/16"),)) in subnets.calls

    await reconciler.withdraw()
    assert subnets.allowed_ips() == VM_TUNNEL_NETWORKS
    subnets.check()


def test_a_vm_peer_installed_later_gets_the_subnets_routed_meanwhile() -> None:
    device = Device(generate_private_key(os.urandom), rng=os.urandom, wall_offset=0.0)
    subnets = VmPeerSubnets(device)
    subnets.before_add([net("172.20.0.0/16")])  # no VM peer yet: remembered only
    assert subnets.allowed_ips() == (*VM_TUNNEL_NETWORKS, net("172.20.0.0/16"))
