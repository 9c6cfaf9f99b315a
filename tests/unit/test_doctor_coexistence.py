"""`dmnc doctor`'s coexistence verdict: another program holding the tunnel addresses (named by interface, dmnc's own
TUN never counted), docker-mac-net-connect's launchd service, both dmnc services, and a running dmnc in standby."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.doctor.checks import CheckResult, Verdict, coexistence_check, kernel_check
from dmnc.routes.hoststate import host_networks_of
from dmnc.routes.manager import Address
from dmnc.supervisor.conflicts import Conflict, interface_address_conflicts, launchd_conflicts
from dmnc.supervisor.supervisor import TUNNEL_HOST_ADDRESSES
from dmnc.vm.result import ForeignInterface

ip = ipaddress.ip_address
Entry = tuple[str, Address, Address, int]  # interface, local address, address (the peer's on a point-to-point), prefix
STAND_IN: Entry = ("utun3", ip("10.33.33.1"), ip("10.33.33.2"), 32)  # docker-mac-net-connect's `10.33.33.1 peer .2`
LAN: Entry = ("en0", ip("192.168.1.20"), ip("192.168.1.20"), 24)
OUR_TUN: Entry = ("utun7", ip("10.33.33.1"), ip("10.33.33.2"), 32)


def conflicts_beside(tunnel_interface: str, *entries: Entry) -> list[Conflict]:
    return interface_address_conflicts(host_networks_of(entries, tunnel_interface), TUNNEL_HOST_ADDRESSES)


def test_dmncs_own_tun_holding_the_tunnel_address_passes() -> None:
    result = coexistence_check(
        conflicts_beside("utun7", LAN, OUR_TUN), both_dmnc_services=False, standby=None, platform="darwin"
    )
    assert result == CheckResult(
        "coexistence",
        Verdict.PASS,
        "no other interface holds the tunnel addresses and docker-mac-net-connect's launchd service is not installed",
    )


def test_linux_passes_without_mentioning_launchd() -> None:
    result = coexistence_check(conflicts_beside("dmnc0", LAN), both_dmnc_services=False, standby=None, platform="linux")
    assert result.detail == "no other interface holds the tunnel addresses"


def test_another_interface_holding_the_tunnel_address_fails_naming_it_and_how_to_stop_it() -> None:
    result = coexistence_check(
        conflicts_beside("utun7", LAN, STAND_IN, OUR_TUN), both_dmnc_services=False, standby=None, platform="darwin"
    )
    assert result.verdict is Verdict.FAIL
    assert result.detail.startswith("interface utun3 already holds the tunnel address 10.33.33.1: ")
    assert "docker-mac-net-connect" in result.detail
    assert result.fix is not None
    assert "sudo brew services stop docker-mac-net-connect" in result.fix


def test_without_the_running_dmncs_status_a_holder_may_be_dmnc_itself_so_it_only_warns() -> None:
    result = coexistence_check(
        conflicts_beside("lo0", STAND_IN),
        both_dmnc_services=False,
        standby=None,
        platform="darwin",
        own_tunnel_unknown="cannot read the running dmnc's status: permission denied",
    )
    assert result.verdict is Verdict.WARN
    assert result.detail.endswith(
        "(this may be dmnc's own tunnel: cannot read the running dmnc's status: permission denied)"
    )
    assert result.fix is not None
    assert result.fix.startswith("sudo dmnc doctor reads the running dmnc's status")


def test_docker_mac_net_connects_launchd_service_fails(tmp_path: Path) -> None:
    conflicts = launchd_conflicts(tmp_path, loaded=lambda label: label == "homebrew.mxcl.docker-mac-net-connect")
    result = coexistence_check(conflicts, both_dmnc_services=False, standby=None, platform="darwin")
    assert result.verdict is Verdict.FAIL
    assert "homebrew.mxcl.docker-mac-net-connect" in result.detail
    assert result.fix == "stop it first: sudo brew services stop docker-mac-net-connect"


def test_one_fix_line_for_several_findings_with_the_same_remedy() -> None:
    conflicts = conflicts_beside("utun7", STAND_IN, ("utun4", ip("fd33:33:33::1"), ip("fd33:33:33::1"), 128))
    result = coexistence_check(conflicts, both_dmnc_services=False, standby=None, platform="darwin")
    assert result.detail.count("already holds") == len(conflicts)
    assert result.fix is not None
    assert result.fix.count("stop that program first") == 1


def test_both_dmnc_services_warn_naming_both_plists() -> None:
    result = coexistence_check([], both_dmnc_services=True, standby=None, platform="darwin")
    assert result.verdict is Verdict.WARN
    assert "/Library/LaunchDaemons/io.github.dmnc.plist" in result.detail
    assert "/Library/LaunchDaemons/homebrew.mxcl.dmnc.plist" in result.detail


def test_a_running_dmnc_in_standby_passes_its_reason_on() -> None:
    reason = "the VM already has a chip0 that is not dmnc's: stop docker-mac-net-connect"
    result = coexistence_check([], both_dmnc_services=False, standby=reason, platform="linux")
    assert result.verdict is Verdict.WARN
    assert result.detail == f"the running dmnc waits in standby: {reason}"


INTERFACES = ("utun7", "utun3", "en0", "bridge100")
CANDIDATE_ADDRESSES = (ip("10.33.33.1"), ip("10.33.33.2"), ip("fd33:33:33::1"), ip("192.168.1.20"), ip("fd33:33:33::2"))


@st.composite
def interface_entries(draw: st.DrawFn) -> list[Entry]:
    entries: list[Entry] = []
    for _ in range(draw(st.integers(0, 6))):
        local = draw(st.sampled_from(CANDIDATE_ADDRESSES))
        peer = draw(st.sampled_from([a for a in CANDIDATE_ADDRESSES if a.version == local.version]))
        entries.append((draw(st.sampled_from(INTERFACES)), local, peer, local.max_prefixlen))
    return entries


@settings(deadline=None)
@given(interface_entries(), st.sampled_from(INTERFACES))
def test_conflicts_name_every_other_holder_of_a_tunnel_address_and_never_dmncs_own_tun(
    entries: list[Entry], tunnel: str
) -> None:
    found = {conflict.found for conflict in conflicts_beside(tunnel, *entries)}
    expected = {
        f"interface {interface} already holds the tunnel address {address}"
        for interface, local, peer, _ in entries
        if interface != tunnel
        for address in (local, peer)
        if address in TUNNEL_HOST_ADDRESSES
    }
    assert {text.split(": ", 1)[0] for text in found} == expected
    assert all(not text.startswith(f"interface {tunnel} ") for text in found)


def test_another_tools_chip0_in_the_vm_fails_the_kernel_check_with_how_to_free_it() -> None:
    result = kernel_check(ForeignInterface("chip0", "6.10.14-linuxkit"))
    assert result.verdict is Verdict.FAIL
    assert result.name == "vm-wireguard"
    assert result.detail.startswith("the VM already has an interface chip0 that is not dmnc's")
    assert result.fix is not None
    assert result.fix.endswith("docker run --rm --net=host --cap-add NET_ADMIN alpine ip link del chip0")
