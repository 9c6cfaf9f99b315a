"""The host-state feed: DNS re-read on a period, interface addresses on every change, the VM endpoint followed as
it roams, the VM's IPv6 passed on."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import trio
import trio.testing

from dmnc.routes.hoststate import ADDRESS_REREAD_SECONDS, DNS_REREAD_SECONDS
from dmnc.routes.manager import Address, RouteError
from dmnc.routes.policy import HostNetwork, HostState, PolicyConfig, VmIpv6
from dmnc.routes.reconcile import RouteReconciler
from dmnc.supervisor.host_watch import ENDPOINT_CHECK_SECONDS, vm_endpoint_address, watch_host_state
from dmnc.supervisor.vm_keeper import VmKeeper
from tests.fakes.routes import FakeRouteManager

TUNNEL = (ipaddress.ip_network("10.33.33.1/32"),)


@dataclass
class Peer:
    endpoint: tuple[str, int] | None


@dataclass
class Side:
    peer: Peer
    ipv6: bool = True


@dataclass
class Vm:
    side: Side | None
    side_set: trio.Event = field(default_factory=trio.Event)

    async def wait_side_set(self) -> None:
        await self.side_set.wait()

    def set_side(self, side: Side) -> None:
        """As VmKeeper does when a setup completes: the side, then the news."""
        self.side = side
        self.side_set.set()
        self.side_set = trio.Event()

    @property
    def carries_ipv6(self) -> VmIpv6:
        if self.side is None:
            return VmIpv6.UNKNOWN
        return VmIpv6.ON if self.side.ipv6 else VmIpv6.OFF


class RecordingReconciler(RouteReconciler):
    def __init__(self) -> None:
        super().__init__(FakeRouteManager(), PolicyConfig())
        self.states: list[HostState] = []

    def set_host_state(self, host: HostState) -> None:
        if not self.states or self.states[-1] != host:
            self.states.append(host)
        super().set_host_state(host)


def test_vm_endpoint_address_is_an_ip_literal_or_none() -> None:
    assert vm_endpoint_address(cast(VmKeeper, Vm(None))) is None
    assert vm_endpoint_address(cast(VmKeeper, Vm(Side(Peer(None))))) is None
    assert vm_endpoint_address(cast(VmKeeper, Vm(Side(Peer(("host.docker.internal", 1)))))) is None
    assert vm_endpoint_address(cast(VmKeeper, Vm(Side(Peer(("fe80::1%en0", 1)))))) == ipaddress.ip_address("fe80::1")


async def test_dns_is_reread_periodically_and_the_endpoint_followed(autojump_clock: trio.testing.MockClock) -> None:
    reads: list[int] = []
    dns: list[tuple[Address, ...]] = [(ipaddress.ip_address("10.1.0.53"),)]

    async def read_dns() -> tuple[Address, ...]:
        reads.append(len(reads))
        return dns[-1]

    routes = RecordingReconciler()
    vm = Vm(None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_host_state, routes, cast(VmKeeper, vm), TUNNEL, read_dns)
        await trio.sleep(1)
        assert routes.states == [HostState(tunnel=TUNNEL, dns_servers=dns[-1], vm_ipv6=VmIpv6.UNKNOWN)]
        vm.side = Side(Peer(("192.168.65.3", 51820)))
        await trio.sleep(ENDPOINT_CHECK_SECONDS)
        assert routes.states[-1].vm_endpoint == ipaddress.ip_address("192.168.65.3")
        dns.append((ipaddress.ip_address("10.2.0.53"),))
        await trio.sleep(DNS_REREAD_SECONDS)
        assert routes.states[-1].dns_servers == dns[-1]
        nursery.cancel_scope.cancel()
    assert len(reads) == 2


async def test_the_vm_sides_ipv6_state_reaches_the_route_policy(autojump_clock: trio.testing.MockClock) -> None:
    """At once when a VM setup finishes; a change nobody announced within ENDPOINT_CHECK_SECONDS."""

    async def read_dns() -> tuple[Address, ...]:
        return ()

    routes = RecordingReconciler()
    vm = Vm(None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_host_state, routes, cast(VmKeeper, vm), TUNNEL, read_dns)
        await trio.sleep(0.5)
        vm.set_side(Side(Peer(None), ipv6=True))
        await trio.sleep(0.01)  # far less than ENDPOINT_CHECK_SECONDS: the finished setup wakes the watch
        assert routes.states[-1].vm_ipv6 is VmIpv6.ON
        vm.side = Side(Peer(None), ipv6=False)
        await trio.sleep(ENDPOINT_CHECK_SECONDS)
        nursery.cancel_scope.cancel()
    assert [state.vm_ipv6 for state in routes.states] == [VmIpv6.UNKNOWN, VmIpv6.ON, VmIpv6.OFF]


class FakeAddresses:
    """A HostAddressSource: networks set by the test, a change announced through a channel."""

    def __init__(self, networks: tuple[HostNetwork, ...]) -> None:
        self.networks = networks
        self.reads = 0
        self.fail: RouteError | None = None
        self._send, self._receive = trio.open_memory_channel[None](10)

    async def host_networks(self) -> tuple[HostNetwork, ...]:
        self.reads += 1
        if self.fail is not None:
            raise self.fail
        return self.networks

    @asynccontextmanager
    async def address_changes(self) -> AsyncIterator[AsyncIterator[None]]:
        yield self._receive

    def announce(self) -> None:
        self._send.send_nowait(None)


def latest_networks(routes: RecordingReconciler) -> tuple[HostNetwork, ...]:
    return routes.states[-1].networks


async def test_host_addresses_are_read_again_at_once_on_a_change(autojump_clock: trio.testing.MockClock) -> None:
    lan = HostNetwork("eth0", ipaddress.ip_network("192.168.1.0/24"))
    hotspot = HostNetwork("wlan0", ipaddress.ip_network("172.20.10.0/28"))
    addresses = FakeAddresses((lan,))
    routes = RecordingReconciler()

    async def no_dns() -> tuple[Address, ...]:
        return ()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_host_state, routes, cast(VmKeeper, Vm(None)), TUNNEL, no_dns, addresses)
        await trio.sleep(0.1)
        assert latest_networks(routes) == (lan,)
        addresses.networks = (lan, hotspot)
        addresses.announce()
        await trio.sleep(0.1)  # far less than ENDPOINT_CHECK_SECONDS: the change wakes the watch
        assert latest_networks(routes) == (lan, hotspot)
        addresses.fail = RouteError("dump addresses failed")
        addresses.announce()
        await trio.sleep(ADDRESS_REREAD_SECONDS)
        assert latest_networks(routes) == (lan, hotspot)  # kept after a failed read
        addresses.fail = None
        addresses.networks = (lan,)
        # Re-read on the period, without a notification: within one endpoint check after the period is up.
        await trio.sleep(ADDRESS_REREAD_SECONDS + ENDPOINT_CHECK_SECONDS)
        assert latest_networks(routes) == (lan,)
        nursery.cancel_scope.cancel()
