"""The path keeper: probes, chooses and moves routes, with a fake clock, prober, VM side and route manager."""

from __future__ import annotations

import ipaddress
import logging

import pytest
import trio
import trio.testing

from dmnc.config import Config, PathOption
from dmnc.control import EventBroadcaster
from dmnc.routes.policy import HostNetwork, NetworkInfo, PolicyConfig
from dmnc.routes.reconcile import RouteReconciler
from dmnc.supervisor.echo_probe import EchoOutcome
from dmnc.supervisor.path import PROBE_FRESH_S, PathKind, ProbeTarget
from dmnc.supervisor.path_keeper import UPGRADE_HINT, PathKeeper
from dmnc.supervisor.vm_keeper import VmSide
from dmnc.vm.result import DirectLink
from dmnc.wireguard import PeerStats
from tests.fakes.routes import FakeRouteManager
from tests.unit.supervisor.test_host_watch import FakeAddresses

ip = ipaddress.ip_address
net = ipaddress.ip_network
SHARED = (HostNetwork("bridge100", net("192.168.106.1/32")), HostNetwork("bridge100", net("192.168.106.0/24")))
LINK = DirectLink("col0", ip("192.168.106.2"), ip("192.168.106.1"))


class FakeVm:
    def __init__(self, links: tuple[DirectLink, ...]) -> None:
        self.side: VmSide | None = VmSide(PeerStats(), bytes(32), "kernel", "host.lima.internal", True, links)
        self.setups_asked = 0

    def set_up_again(self) -> None:
        self.setups_asked += 1


class FakeProber:
    def __init__(self) -> None:
        self.answering = True
        self.probed: list[ProbeTarget] = []

    async def __call__(self, target: ProbeTarget, within_s: float, identifier: int, sequence: int) -> EchoOutcome:
        self.probed.append(target)
        if self.answering:
            return EchoOutcome(True)
        await trio.sleep(within_s)
        return EchoOutcome(False, "no answer")


def keeper(
    addresses: FakeAddresses,
    prober: FakeProber,
    config: Config = Config(),  # noqa: B008 (frozen)
) -> tuple[PathKeeper, FakeRouteManager, RouteReconciler, FakeVm]:
    manager = FakeRouteManager()
    routes = RouteReconciler(manager, PolicyConfig())
    vm = FakeVm((LINK,))
    paths = PathKeeper(
        routes, vm, addresses, lambda: config, EventBroadcaster(), tunnel_interface="utun7", tunnel_networks=(),
        prober=prober,
    )  # fmt: skip
    return paths, manager, routes, vm


async def test_routes_go_direct_fall_back_when_the_vm_stops_answering_and_return(
    autojump_clock: trio.testing.MockClock,
) -> None:
    addresses, prober = FakeAddresses(SHARED), FakeProber()
    paths, manager, routes, _ = keeper(addresses, prober)
    async with trio.open_nursery() as nursery:
        await nursery.start(routes.run)
        routes.set_networks([NetworkInfo("a", "id-a", "bridge", "local", False, {}, (net("172.20.0.0/16"),))])
        ipv4, ipv6 = await paths.decide()
        assert ipv4.kind is PathKind.DIRECT
        assert ipv6.kind is PathKind.TUNNEL
        await routes.settled()
        [route] = await manager.list_ours()
        assert route.gateway == ip("192.168.106.2")
        prober.answering = False
        started = trio.current_time()
        while paths.choices[0].kind is PathKind.DIRECT:
            await paths.decide()
        assert trio.current_time() - started <= PROBE_FRESH_S + 1.5
        assert paths.status()[0].reason == "192.168.106.2 via bridge100 did not answer the probe (no answer)"
        await routes.settled()
        [route] = await manager.list_ours()
        assert route.gateway is None
        prober.answering = True
        assert (await paths.decide())[0].kind is PathKind.DIRECT
        nursery.cancel_scope.cancel()


async def test_a_vanished_host_address_falls_back_at_the_next_round(autojump_clock: trio.testing.MockClock) -> None:
    addresses, prober = FakeAddresses(SHARED), FakeProber()
    paths, _, _, _ = keeper(addresses, prober)
    assert (await paths.decide())[0].kind is PathKind.DIRECT
    addresses.networks = ()
    choice = (await paths.decide())[0]
    assert choice.kind is PathKind.TUNNEL
    assert choice.reason == "the host no longer has the address 192.168.106.1 the VM shares a link with"


async def test_the_tunnel_option_probes_nothing_and_offers_the_vm_no_host_addresses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    addresses, prober = FakeAddresses(SHARED), FakeProber()
    paths, _, _, _ = keeper(addresses, prober, Config(path=PathOption.TUNNEL))
    assert [choice.reason for choice in await paths.decide()] == ["--path tunnel", "--path tunnel"]
    assert prober.probed == []
    assert paths.direct_hosts() == ()


async def test_a_new_host_address_sets_the_vm_side_up_again_once(autojump_clock: trio.testing.MockClock) -> None:
    addresses, prober = FakeAddresses(()), FakeProber()
    paths, _, _, vm = keeper(addresses, prober)
    async with trio.open_nursery() as nursery:
        await nursery.start(paths.run)
        assert vm.setups_asked == 0
        addresses.networks = SHARED
        addresses.announce()
        await trio.sleep(0.1)
        assert vm.setups_asked == 1
        assert paths.direct_hosts() == (ip("192.168.106.1"),)
        await trio.sleep(5)
        assert vm.setups_asked == 1
        nursery.cancel_scope.cancel()


async def test_going_direct_by_default_names_the_option_that_keeps_the_tunnel(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for option, hinted in ((PathOption.AUTO, True), (PathOption.DIRECT, False)):
        caplog.clear()
        paths, *_ = keeper(FakeAddresses(SHARED), FakeProber(), Config(path=option))
        assert (await paths.decide())[0].kind is PathKind.DIRECT
        [moved] = [record.getMessage() for record in caplog.records if "IPv4 routes go direct" in record.getMessage()]
        assert moved.endswith(UPGRADE_HINT) is hinted, moved


async def test_one_missed_answer_keeps_the_direct_path_while_the_last_answer_is_fresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # path.py: a family goes direct on "an answer from the VM's address within PROBE_FRESH_S". One lost echo
    # (an ICMP packet is best-effort, RFC 792) must not move every route to the tunnel and back a second later.
    addresses, prober = FakeAddresses(SHARED), FakeProber()
    paths, _, _, _ = keeper(addresses, prober)
    assert (await paths.decide())[0].kind is PathKind.DIRECT
    last_answer = trio.current_time()
    prober.answering = False
    assert (await paths.decide())[0].kind is PathKind.DIRECT
    while paths.choices[0].kind is PathKind.DIRECT:
        assert trio.current_time() - last_answer <= PROBE_FRESH_S
        await paths.decide()
    assert trio.current_time() - last_answer <= PROBE_FRESH_S + 1.5
    assert paths.status()[0].reason == "192.168.106.2 via bridge100 did not answer the probe (no answer)"


async def test_a_shared_link_that_becomes_the_hosts_uplink_gives_up_the_direct_path(
    autojump_clock: trio.testing.MockClock,
) -> None:
    paths, manager, _, vm = keeper(FakeAddresses(SHARED), FakeProber())
    assert (await paths.decide())[0].kind is PathKind.DIRECT
    assert paths.direct_hosts() == (ip("192.168.106.1"),)
    setups_before = vm.setups_asked
    manager.install_other(net("0.0.0.0/0"), "bridge100", 5, gateway=ip("192.168.106.254"))
    ipv4, _ = await paths.decide()
    assert ipv4.kind is PathKind.TUNNEL
    assert "holds the host's default route" in ipv4.reason
    assert paths.direct_hosts() == ()
    # The VM still has the link open for the host's address there: one new setup closes it, not one per round.
    await paths.decide()
    assert vm.setups_asked == setups_before + 1
