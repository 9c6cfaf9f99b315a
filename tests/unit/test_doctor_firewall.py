"""Doctor's docker-firewall check: what Docker's nftables firewall backend does to the tunnel, and the exact fix."""

from __future__ import annotations

import pytest

from dmnc.doctor.checks import Verdict, docker_firewall_check
from dmnc.vm.nftables import DockerNftables
from dmnc.vm.result import KernelWireGuardMissing, KernelWireGuardPresent


def test_docker_on_iptables_passes() -> None:
    result = docker_firewall_check(KernelWireGuardPresent("6.1"), "chip0")
    assert result.verdict is Verdict.PASS
    assert "iptables" in result.detail


def test_nftables_with_an_accepted_mark_passes_and_notes_published_ports() -> None:
    result = docker_firewall_check(KernelWireGuardMissing("6.1", DockerNftables.MARKED), "chip0")
    assert result.verdict is Verdict.PASS
    assert "-o com.docker.network.bridge.trusted_host_interfaces=chip0" in result.detail


@pytest.mark.parametrize("outcome", [KernelWireGuardPresent, KernelWireGuardMissing])
def test_nftables_without_a_mark_fails_naming_the_daemon_setting_and_where_it_lives(
    outcome: type[KernelWireGuardPresent] | type[KernelWireGuardMissing],
) -> None:
    result = docker_firewall_check(outcome("6.1", DockerNftables.UNMARKED), "chip0")
    assert result.verdict is Verdict.FAIL
    assert "without bridge-accept-fwmark" in result.detail
    assert result.fix is not None
    assert '"bridge-accept-fwmark": "0x1000000/0x1000000"' in result.fix
    for place in ("Docker Desktop: Settings > Docker Engine", "colima start --edit", "/etc/docker/daemon.json"):
        assert place in result.fix
    assert "trusted_host_interfaces=chip0" in result.fix


def test_docker_reporting_nftables_while_the_setup_image_saw_no_table_fails_naming_nft() -> None:
    result = docker_firewall_check(KernelWireGuardPresent("6.1"), "chip0", "nftables")
    assert result.verdict is Verdict.FAIL
    assert "the setup image has no `nft`" in result.detail
    assert result.fix is not None
    assert "--setup-image" in result.fix


def test_without_the_vm_check_the_reported_backend_is_mentioned_in_the_skip() -> None:
    assert docker_firewall_check(None, "chip0", "nftables").verdict is Verdict.SKIP
    assert "Docker reports its nftables backend" in docker_firewall_check(None, "chip0", "nftables").detail
    assert docker_firewall_check(None, "chip0", "iptables").detail == "needs the VM check (see vm-wireguard)"
