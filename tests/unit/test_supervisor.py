"""The service's own logic: reconnect backoff, VM-side staleness from the tunnel's counters, network mapping."""

from __future__ import annotations

import ipaddress
import itertools
import os
from types import SimpleNamespace
from typing import ClassVar, cast

import pytest
import trio
import trio.testing

from dmnc.config import Config, ConfigFlags
from dmnc.docker.client import DockerClient
from dmnc.docker.errors import ConnectionLost
from dmnc.docker.models import IpamConfig, Network
from dmnc.routes import RouteError
from dmnc.routes.policy import NetworkInfo
from dmnc.supervisor import supervisor
from dmnc.supervisor.supervisor import (
    FIRST_HANDSHAKE_GRACE_S,
    VM_STALE_AFTER_S,
    Backoff,
    Service,
    _fatal_error,
    docker_problem,
)
from dmnc.tunnel.udp import UdpEndpoint
from dmnc.vm import SetupParams, SetupResult, VmMode
from dmnc.wireguard import Device, PeerStats, public_key


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    backoff = Backoff(0.25, 5.0, rng=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    low = Backoff(0.25, 5.0, rng=lambda: 0.0)
    assert [low.next_delay() for _ in range(3)] == [0.125, 0.25, 0.5]


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(1.0, 8.0, rng=lambda: 1.0)
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_network_info_of_a_docker_network_carries_what_the_route_policy_needs() -> None:
    network = Network(
        id="abc",
        name="web",
        driver="bridge",
        scope="local",
        internal=True,
        labels={"dmnc.route": "false"},
        ipam_configs=(
            IpamConfig(ipaddress.ip_network("172.30.0.0/16")),
            IpamConfig(None),
            IpamConfig(ipaddress.ip_network("fd00:1::/64")),
        ),
    )
    info = NetworkInfo.of(network)
    assert (info.name, info.id, info.driver, info.scope, info.internal) == ("web", "abc", "bridge", "local", True)
    assert info.labels == {"dmnc.route": "false"}
    assert info.subnets == (ipaddress.ip_network("172.30.0.0/16"), ipaddress.ip_network("fd00:1::/64"))


def service_with_vm_peer(set_up_at: float) -> tuple[Service, PeerStats]:
    service = Service(Config(), ConfigFlags())
    peer = PeerStats()
    service._vm_peer = peer
    service._vm.set_up_at = set_up_at
    return service, peer


def test_vm_side_without_a_first_handshake_is_stale_after_the_grace_period() -> None:
    service, _ = service_with_vm_peer(set_up_at=100.0)
    service.check_vm_health(100.0 + FIRST_HANDSHAKE_GRACE_S)
    assert not service._vm.stale.is_set()
    service.check_vm_health(100.0 + FIRST_HANDSHAKE_GRACE_S + 0.5)
    assert service._vm.stale.is_set()


def test_vm_side_that_keeps_talking_stays_fresh_and_silence_makes_it_stale() -> None:
    service, peer = service_with_vm_peer(set_up_at=0.0)
    now = 0.0
    for _ in range(20):  # keepalives every 25 s for several minutes
        now += 25.0
        peer.rx_packets += 1
        service.check_vm_health(now)
    assert not service._vm.stale.is_set()
    service.check_vm_health(now + VM_STALE_AFTER_S)
    assert not service._vm.stale.is_set()
    service.check_vm_health(now + VM_STALE_AFTER_S + 1.0)
    assert service._vm.stale.is_set()


def test_health_check_without_a_vm_peer_does_nothing() -> None:
    service = Service(Config(), ConfigFlags())
    service.check_vm_health(1e9)
    assert not service._vm.stale.is_set()


def test_first_handshake_is_announced_on_the_event_feed() -> None:
    service, peer = service_with_vm_peer(set_up_at=0.0)
    with service.events.subscribe() as subscription:
        peer.handshakes = 1
        peer.endpoint = ("192.168.65.3", 41000)
        peer.rx_packets = 1
        service.check_vm_health(1.0)
        event = subscription.receive.receive_nowait()
    assert event.kind == "tunnel.up"
    assert "192.168.65.3:41000" in event.message


def test_user_facing_errors_are_found_inside_exception_groups() -> None:
    error = RouteError("interface dmnc0 vanished")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("bug"), error])])
    assert _fatal_error(nested) is error
    assert _fatal_error(ExceptionGroup("only bugs", [ValueError("bug")])) is None


@pytest.mark.parametrize("value", ["abc", "-1", "0", "nan", "inf"])
def test_stale_after_test_hook_ignores_nonsense(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DMNC_TEST_VM_STALE_AFTER", value)
    assert Service(Config(), ConfigFlags())._stale_after == VM_STALE_AFTER_S


def test_docker_failures_are_found_inside_nursery_exception_groups() -> None:
    lost = ConnectionLost("the Docker daemon closed the connection mid-response", endpoint="GET /events")
    problem = docker_problem(ExceptionGroup("nursery", [ExceptionGroup("inner", [lost])]))
    assert problem is not None
    assert problem.startswith("lost Docker: ")
    assert docker_problem(ExceptionGroup("bugs", [KeyError("x")])) is None
    assert docker_problem(ValueError("bug")) is None


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class FakeRunner:
    """Stands in for VmSetupRunner: every setup succeeds at once and is recorded."""

    setups: ClassVar[list[float]] = []

    def __init__(self, docker: object, **options: object) -> None:
        pass

    async def setup(self, params: SetupParams) -> SetupResult:
        FakeRunner.setups.append(trio.current_time())
        vm_key = public_key(bytes(range(32)))
        return SetupResult(VmMode.USERSPACE, vm_key, ("192.168.65.2", 3333), "host.docker.internal", "6.1", True)


async def test_a_vm_silent_after_setup_is_set_up_again_only_when_a_container_starts(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setattr(supervisor, "VmSetupRunner", FakeRunner)
    FakeRunner.setups = []
    service = Service(Config(), ConfigFlags())
    service._device = Device(bytes(range(1, 33)), rng=os.urandom, wall_offset=0.0)
    service._udp = cast(UdpEndpoint, SimpleNamespace(port=3333))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(service._keep_vm_side, cast(DockerClient, None))
        nursery.start_soon(service._health)
        await trio.sleep(FIRST_HANDSHAKE_GRACE_S + 10)  # no handshake ever: stale, but do not wake the VM again
        assert len(FakeRunner.setups) == 1
        service._docker_activity.set()  # a container started: Docker is in use, the VM awake
        await trio.sleep(1)
        assert len(FakeRunner.setups) == 2
        await trio.sleep(2000)  # silent again: retries spaced further and further apart, not every 20 s
        gaps = [later - earlier for earlier, later in itertools.pairwise(FakeRunner.setups[1:])]
        assert len(gaps) >= 2
        assert gaps == sorted(gaps)
        assert gaps[0] >= FIRST_HANDSHAKE_GRACE_S + supervisor.QUIET_VM_RETRY_INITIAL_S / 2
        nursery.cancel_scope.cancel()
