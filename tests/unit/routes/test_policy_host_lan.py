"""A macvlan/ipvlan network on the host's own LAN (Colima's bridged mode): never routed, and said to be reachable
directly, by the policy, status and doctor."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.control.messages import DockerStatus, RouteStatus, StatusSnapshot, TunnelStatus, VmStatus
from dmnc.doctor.checks import Verdict, installed_routes_check, route_conflict_check
from dmnc.routes.policy import HostNetwork, HostState, NetworkInfo, PolicyConfig, SkipReason, evaluate

LAN = ipaddress.ip_network("192.168.1.0/24")
HOST = HostState(networks=(HostNetwork("en0", LAN),))


def lan_network(driver: str, subnet: str = "192.168.1.0/24") -> NetworkInfo:
    return NetworkInfo("lan", "id-lan", driver, "local", False, subnets=(ipaddress.ip_network(subnet),))


@pytest.mark.parametrize("driver", ["macvlan", "ipvlan"])
def test_a_macvlan_or_ipvlan_subnet_on_the_hosts_lan_is_reachable_directly_and_never_routed(driver: str) -> None:
    config = PolicyConfig.from_strings(over=["0.0.0.0/0"], force=True)
    result = evaluate([lan_network(driver)], config, host=HOST)
    assert result.desired == frozenset()
    [skip] = result.skipped
    assert skip.reason is SkipReason.ON_HOST_LAN
    assert skip.describe() == (
        "reachable directly on your LAN: overlaps 192.168.1.0/24 on en0;"
        " nothing to do: this host reaches its containers without dmnc"
    )


def test_a_bridge_network_on_the_hosts_lan_stays_a_host_network_clash() -> None:
    [skip] = evaluate([lan_network("bridge")], PolicyConfig(), host=HOST).skipped
    assert skip.reason is SkipReason.HOST_NETWORK


@given(driver=st.sampled_from(["macvlan", "ipvlan", "bridge", "overlay"]), prefix=st.integers(16, 30))
def test_every_subnet_overlapping_the_hosts_lan_is_left_out_and_only_lan_drivers_call_it_reachable(
    driver: str, prefix: int
) -> None:
    subnet = str(ipaddress.ip_network(f"192.168.1.0/{prefix}", strict=False))
    result = evaluate([lan_network(driver, subnet)], PolicyConfig(), host=HOST)
    assert result.desired == frozenset()
    [skip] = result.skipped
    lan_driver = driver in {"macvlan", "ipvlan"}
    assert (skip.reason is SkipReason.ON_HOST_LAN) is lan_driver
    assert (skip.reason is SkipReason.HOST_NETWORK) is not lan_driver


def test_doctor_says_reachable_directly_on_your_lan_not_not_routed() -> None:
    conflicts = route_conflict_check([lan_network("macvlan")], PolicyConfig(), [], HOST)
    assert conflicts.verdict is Verdict.PASS
    assert "network 'lan' subnet 192.168.1.0/24 is reachable directly on your LAN" in conflicts.detail
    snapshot = StatusSnapshot(
        version="0.1.0",
        tunnel=TunnelStatus(interface="utun7", listen="0.0.0.0:3333", last_handshake_age_s=1.0, endpoint=None),
        docker=DockerStatus(host="unix:///x.sock", runtime="Colima", api_version="1.47", connected=True),
        vm=VmStatus(mode="kernel"),
    )
    route = RouteStatus(
        LAN,
        "lan",
        installed=False,
        reason="reachable directly on your LAN: overlaps",
        decision=SkipReason.ON_HOST_LAN.decision,
    )
    routes = installed_routes_check(dataclasses.replace(snapshot, routes=(route,)), "not running")
    assert routes.verdict is Verdict.PASS
    assert "192.168.1.0/24 (lan) is reachable directly on your LAN" in routes.detail
    assert "not routed" not in routes.detail
