"""The VM keeper on trio's mock clock: when it sets the VM side up again, and what it leaves alone."""

from __future__ import annotations

import ipaddress
import itertools
import os
from types import SimpleNamespace
from typing import cast

import pytest
import trio
import trio.testing

from dmnc.config import Config
from dmnc.control import EventBroadcaster
from dmnc.docker.client import DockerClient
from dmnc.docker.models import IpamConfig, Network
from dmnc.routes.policy import VmIpv6
from dmnc.supervisor import vm_keeper
from dmnc.supervisor.vm_keeper import (
    FIRST_HANDSHAKE_GRACE_S,
    HEALTH_INTERVAL_S,
    QUIET_VM_RETRY_INITIAL_S,
    QUIET_VM_RETRY_MAX_S,
    VM_STANDBY_RECHECK_S,
    Verdict,
    VmKeeper,
)
from dmnc.tunnel.datapath import Tunnel
from dmnc.tunnel.flowfilter import InboundPort
from dmnc.tunnel.udp import UdpEndpoint
from dmnc.vm import ForeignInterfaceError, SetupParams, SetupResult, VmMode
from dmnc.vm.shims import plan_shims
from dmnc.wireguard import Device, public_key

# Clock readings are sums of float sleeps: compare with this much slack.
EPSILON_S = 1e-6


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """pytest-trio runs a test on the clock fixture it takes as an argument: this one skips every idle wait."""
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def vm_ipv6() -> bool:
    """What the fake setups report as `ipv6=on|off`; a test parametrizes it to False for a VM without IPv6."""
    return True


@pytest.fixture
def setups(monkeypatch: pytest.MonkeyPatch, vm_ipv6: bool) -> list[float]:
    """Replaces VmSetupRunner: every setup succeeds at once; the list records when each ran."""
    started: list[float] = []

    class FakeRunner:
        def __init__(self, docker: object, **options: object) -> None:
            pass

        async def setup(self, params: SetupParams) -> SetupResult:
            started.append(trio.current_time())
            setup_params.append(params)
            vm_key = public_key(bytes(range(32)))
            return SetupResult(VmMode.USERSPACE, vm_key, ("192.168.65.2", 3333), "host.docker.internal", "6.1", vm_ipv6)

    monkeypatch.setattr(vm_keeper, "VmSetupRunner", FakeRunner)
    return started


# The parameters of each setup the fake runner ran, in order.
setup_params: list[SetupParams] = []


def keeper_with(config: list[Config], events: EventBroadcaster | None = None) -> VmKeeper:
    """A keeper on a real Device; `config[0]` is the current configuration (a test may replace it, as SIGHUP does)."""
    return VmKeeper(
        Device(bytes(range(1, 33)), rng=os.urandom, wall_offset=0.0),
        cast(Tunnel, SimpleNamespace(answer_recent_initiation=lambda: False)),
        cast(UdpEndpoint, SimpleNamespace(port=3333)),
        lambda: config[0],
        events or EventBroadcaster(),
    )


async def keep_for_a_moment(keeper: VmKeeper) -> None:
    """Run the keeper long enough for its first setup (the fake runners answer at once), then stop it."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.keep, cast(DockerClient, None))
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()


def quiet_wait_bound(retry: int) -> float:
    """The longest wait before quiet retry number `retry` (0 = the first): doubling, capped."""
    return min(QUIET_VM_RETRY_MAX_S, QUIET_VM_RETRY_INITIAL_S * 2.0**retry)


async def test_a_vm_silent_after_setup_is_set_up_again_only_when_a_container_starts(
    setups: list[float], autojump_clock: trio.testing.MockClock
) -> None:
    keeper = keeper_with([Config()])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.keep, cast(DockerClient, None))
        nursery.start_soon(keeper.watch_health)
        await trio.sleep(FIRST_HANDSHAKE_GRACE_S + 10)  # no handshake ever: stale, but do not wake the VM again
        assert len(setups) == 1
        container_started_at = trio.current_time()
        keeper.container_started()  # Docker is in use, the VM awake
        await trio.sleep(1)
        assert len(setups) == 2
        assert setups[1] - container_started_at < EPSILON_S
        await trio.sleep(2000)  # silent again: retries spaced further and further apart, not every 20 s
        nursery.cancel_scope.cancel()
    # After setup 2 the VM side is declared stale within one health interval past the grace period, then the keeper
    # waits a jittered [d/2, d] of the doubling schedule (the first quiet wait, cut short by the container, was
    # retry 0). Jitter may make a capped wait shorter than the one before: only these bounds are promised.
    gaps = [later - earlier for earlier, later in itertools.pairwise(setups[1:])]
    assert len(gaps) >= 3
    for retry, gap in enumerate(gaps, start=1):
        longest = quiet_wait_bound(retry)
        assert FIRST_HANDSHAKE_GRACE_S + longest / 2 < gap + EPSILON_S
        assert gap <= FIRST_HANDSHAKE_GRACE_S + HEALTH_INTERVAL_S + longest + EPSILON_S


async def test_a_vm_side_gone_silent_after_talking_is_set_up_again_at_once_by_the_current_limit(
    setups: list[float], autojump_clock: trio.testing.MockClock
) -> None:
    config = [Config(vm_stale_after=40.0)]
    events = EventBroadcaster()
    keeper = keeper_with(config, events)
    assert keeper.check_health(0.0) is Verdict.NOT_SET_UP
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.keep, cast(DockerClient, None))
        await trio.sleep(0.5)
        side = keeper.side
        assert side is not None
        assert side.mode == "userspace"
        side.peer.rx_packets = 1
        now = trio.current_time()
        assert keeper.check_health(now) is Verdict.HEALTHY
        assert keeper.check_health(now + 10.0) is Verdict.HEALTHY
        config[0] = Config(vm_stale_after=4.0)  # SIGHUP: the next check applies the new limit
        with events.subscribe() as subscription:
            assert keeper.check_health(now + 10.0) is Verdict.STALE
            event = subscription.receive.receive_nowait()
        assert event.kind == "vm.stale"
        await trio.sleep(0.5)
        assert len(setups) == 2  # it talked after the last setup: no quiet wait
        assert keeper.side is not None
        assert keeper.side.peer is side.peer  # same VM key: the peer and its counters stay
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("vm_ipv6", [False])
async def test_a_vm_side_without_ipv6_is_known_as_ipv4_only_and_says_so(
    setups: list[float], autojump_clock: trio.testing.MockClock
) -> None:
    events = EventBroadcaster()
    keeper = keeper_with([Config()], events)
    before_setup = keeper.carries_ipv6  # not known yet: no new IPv6 route
    with events.subscribe() as subscription:
        await keep_for_a_moment(keeper)
        ready = subscription.receive.receive_nowait()
    assert keeper.side is not None
    assert keeper.side.ipv6 is False
    assert (before_setup, keeper.carries_ipv6) == (VmIpv6.UNKNOWN, VmIpv6.OFF)
    assert ready.kind == "vm.ready"
    assert ready.message.endswith("; IPv4 only: the VM has IPv6 disabled")


async def test_a_changed_inbound_port_list_sets_a_healthy_vm_side_up_again_with_it(
    setups: list[float], autojump_clock: trio.testing.MockClock
) -> None:
    setup_params.clear()
    config = [Config()]
    keeper = keeper_with(config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.keep, cast(DockerClient, None))
        await trio.sleep(0.5)
        side = keeper.side
        assert side is not None
        side.peer.rx_packets = 1  # healthy: nothing would set it up again
        config[0] = Config(inbound_allow=(InboundPort(8088),))  # SIGHUP with --allow-inbound 8088
        keeper.set_up_again()
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert len(setups) == 2
    assert [params.allow_inbound for params in setup_params] == [(), (InboundPort(8088),)]
    assert keeper.side is not None
    assert keeper.side.peer is side.peer  # the same VM key: the peer and its session stay


async def test_changed_shims_set_the_vm_side_up_again_with_them_and_the_same_set_does_not(
    setups: list[float], autojump_clock: trio.testing.MockClock
) -> None:
    setup_params.clear()
    keeper = keeper_with([Config()])
    (shim,) = plan_shims([MACVLAN_NETWORK]).shims
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.keep, cast(DockerClient, None))
        await trio.sleep(0.5)
        side = keeper.side
        assert side is not None
        side.peer.rx_packets = 1  # healthy: only a changed set of shims sets it up again
        keeper.set_shims((shim,))
        await trio.sleep(0.5)
        keeper.set_shims((shim,))
        await trio.sleep(0.5)
        keeper.set_shims(())
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert [params.shims for params in setup_params] == [(), (shim,), ()]


MACVLAN_NETWORK = Network(
    "cd" * 32,
    "lan",
    "macvlan",
    ipam_configs=(
        IpamConfig(ipaddress.ip_network("192.168.1.0/24"), None, None, {"dmnc": ipaddress.ip_address("192.168.1.250")}),
    ),
    options={"parent": "eth1"},
)


async def test_shims_the_vm_could_not_make_are_announced_by_network(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    (shim,) = plan_shims([MACVLAN_NETWORK]).shims

    class FakeRunner:
        def __init__(self, docker: object, **options: object) -> None:
            pass

        async def setup(self, params: SetupParams) -> SetupResult:
            vm_key = public_key(bytes(range(32)))
            endpoint = ("192.168.65.2", 3333)
            return SetupResult(VmMode.USERSPACE, vm_key, endpoint, "host.docker.internal", "6.1", True, (shim.link,))

    monkeypatch.setattr(vm_keeper, "VmSetupRunner", FakeRunner)
    events = EventBroadcaster()
    keeper = keeper_with([Config()], events)
    keeper.set_shims((shim,))
    with events.subscribe() as subscription:
        await keep_for_a_moment(keeper)
        failed = subscription.receive.receive_nowait()
        ready = subscription.receive.receive_nowait()
    assert (failed.kind, ready.kind) == ("vm.shim_failed", "vm.ready")
    assert "no shim in the VM for network lan (parent eth1)" in failed.message


@pytest.fixture
def foreign_then_free(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replaces VmSetupRunner: the first two setups find another tool's chip0, the third succeeds. Records when
    each ran."""
    started: list[float] = []

    class ForeignRunner:
        def __init__(self, docker: object, **options: object) -> None:
            pass

        async def setup(self, params: SetupParams) -> SetupResult:
            started.append(trio.current_time())
            if len(started) <= 2:
                raise ForeignInterfaceError("chip0")
            return SetupResult(VmMode.KERNEL, public_key(bytes(range(32))), ("192.168.65.2", 3333), "h", "6.1", True)

    monkeypatch.setattr(vm_keeper, "VmSetupRunner", ForeignRunner)
    return started


async def test_a_service_waits_in_standby_while_the_vm_interface_is_foreign_then_takes_over(
    foreign_then_free: list[float], autojump_clock: trio.testing.MockClock
) -> None:
    events = EventBroadcaster()
    keeper = VmKeeper(
        Device(bytes(range(1, 33)), rng=os.urandom, wall_offset=0.0),
        cast(Tunnel, SimpleNamespace(answer_recent_initiation=lambda: False)),
        cast(UdpEndpoint, SimpleNamespace(port=3333)),
        Config,
        events,
        standby_on_foreign=True,
    )
    with events.subscribe() as subscription:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.keep, cast(DockerClient, None))
            await trio.sleep(1)
            waiting = (keeper.standby, keeper.side)
            await trio.sleep(2 * VM_STANDBY_RECHECK_S)
            running = (keeper.standby, keeper.side)
            nursery.cancel_scope.cancel()
        kinds = [subscription.receive.receive_nowait().kind for _ in range(3)]
    assert waiting[0] is not None
    assert "chip0 that is not dmnc's" in waiting[0]
    assert waiting[1] is None
    assert running[0] is None
    assert running[1] is not None
    assert kinds == ["service.standby", "service.active", "vm.ready"]  # the standby reported once
    assert [later - earlier for earlier, later in itertools.pairwise(foreign_then_free)] == pytest.approx(
        [VM_STANDBY_RECHECK_S] * 2
    )


async def test_in_the_foreground_a_foreign_vm_interface_ends_the_keeper(
    foreign_then_free: list[float], autojump_clock: trio.testing.MockClock
) -> None:
    keeper = keeper_with([Config()])
    with pytest.raises(ForeignInterfaceError):
        await keeper.keep(cast(DockerClient, None))
    assert len(foreign_then_free) == 1
    assert keeper.side is None
