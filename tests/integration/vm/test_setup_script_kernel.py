"""The VM-side setup script on a real kernel with WireGuard: Debian's 6.1 kernel in the qemu lab guest.

The guest plays the Docker VM (the script runs as root there, as in the --net=host setup container); a wireguard-go
peer in the test's namespace plays dmnc on the host. One boot is shared by the module (TCG boots take seconds).
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dmnc.vm import (
    KernelWireGuardMissing,
    KernelWireGuardPresent,
    ScriptMode,
    SetupParams,
    SetupResult,
    TeardownDone,
    VmMode,
    outcome_from_output_untrusted,
    script_arguments,
)
from dmnc.vm.assets import setup_script
from tests.conftest import require_root, require_tools
from tests.integration.tunnel.peers import DmncPeer, dmnc_wg, render_dmnc_config
from tests.integration.vm.scriptlab import LAB_NONCE
from tests.lab.netns import Netns, netns, wait_for_ping
from tests.lab.qemu_guest import QemuGuest, qemu_guest, require_guest_image
from tests.lab.wggo import WgPeer, WireGuardGo, wg_genkey, wg_pubkey, wireguard_go

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HOST_PORT = 51820
HOST_UNDERLAY = "192.168.200.1"
SCRIPT_PATH = "/run/dmnc-setup.sh"
HANDSHAKE_TIMEOUT_SECONDS = 20.0


@dataclass
class KernelLab:
    host: Netns
    guest: QemuGuest


@dataclass
class KernelLabWithPeer(KernelLab):
    host_peer: WireGuardGo
    params: SetupParams


@pytest.fixture(scope="module")
def guest_lab() -> Iterator[KernelLab]:
    require_root()
    require_tools("ip", "ping", "qemu-system-x86_64", "wg", "wireguard-go")
    image = require_guest_image()
    with netns("dmkq") as host, qemu_guest(host, image=image, host_addresses=(f"{HOST_UNDERLAY}/24",)) as guest:
        guest.put_file(SCRIPT_PATH, setup_script().encode(), mode=0o755)
        yield KernelLab(host, guest)


@pytest.fixture
def kernel_lab(guest_lab: KernelLab) -> Iterator[KernelLabWithPeer]:
    """The shared guest with a wireguard-go host peer for this test (the script replaces the previous host peer)."""
    with wireguard_go(guest_lab.host, address="10.33.33.1/32", listen_port=HOST_PORT) as host_peer:
        params = SetupParams(base64.b64decode(host_peer.public_key), HOST_PORT, endpoint=HOST_UNDERLAY)
        yield KernelLabWithPeer(guest_lab.host, guest_lab.guest, host_peer, params)


def run_in_guest(lab: KernelLab, params: SetupParams, mode: ScriptMode) -> tuple[int, str]:
    # The guest agent runs a shell command line; every argument is quoted (and was validated by SetupParams).
    command = shlex.join(["sh", SCRIPT_PATH, *script_arguments(params, mode, nonce=LAB_NONCE)])
    return lab.guest.run(command, timeout=60)


def guest_rules(lab: KernelLab) -> list[str]:
    rules = []
    for save in ("iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save", "ip6tables-legacy-save"):
        for line in lab.guest.check(save).splitlines():
            if line.startswith("-A ") and ("chip0" in line or "10.33.33.1" in line or "fd33:33:33::1" in line):
                rules.append(f"{save}: {line}")
    return rules


def test_setup_creates_a_kernel_chip0_that_completes_a_handshake(kernel_lab: KernelLabWithPeer) -> None:
    lab = kernel_lab
    exit_code, output = run_in_guest(lab, lab.params, ScriptMode.SETUP)
    result = outcome_from_output_untrusted(output, exit_code, nonce=LAB_NONCE)
    assert isinstance(result, SetupResult), output
    assert result.mode is VmMode.KERNEL
    assert result.endpoint == (HOST_UNDERLAY, HOST_PORT)
    assert result.kernel_release.startswith("6.1.")
    assert "wireguard" in lab.guest.check("ip -d link show dev chip0")

    lab.host_peer.peers = [WgPeer(base64.b64encode(result.vm_public_key).decode(), ["10.33.33.2/32"])]
    lab.host_peer.apply_config()
    lab.host.run(["ip", "route", "replace", "10.33.33.2/32", "dev", lab.host_peer.interface])
    lab.host_peer.wait_for_handshake(HANDSHAKE_TIMEOUT_SECONDS)
    assert wait_for_ping(lab.host, "10.33.33.2")

    # Again: same interface and key (the host's peer stays valid), each rule still exactly once.
    rules = guest_rules(lab)
    # raw PREROUTING, OUTPUT and DOCKER-USER out to DMNC-TO-HOST, DOCKER-USER in, nat: for IPv4 and IPv6.
    assert len(rules) == 10
    exit_code, output = run_in_guest(lab, lab.params, ScriptMode.SETUP)
    again = outcome_from_output_untrusted(output, exit_code, nonce=LAB_NONCE)
    assert isinstance(again, SetupResult)
    assert again.vm_public_key == result.vm_public_key
    assert guest_rules(lab) == rules
    assert wait_for_ping(lab.host, "10.33.33.2")


def test_teardown_removes_kernel_chip0_and_every_rule(kernel_lab: KernelLabWithPeer) -> None:
    lab = kernel_lab
    exit_code, output = run_in_guest(lab, lab.params, ScriptMode.SETUP)
    assert not isinstance(outcome_from_output_untrusted(output, exit_code, nonce=LAB_NONCE), KernelWireGuardMissing)
    exit_code, output = run_in_guest(lab, lab.params, ScriptMode.TEARDOWN)
    assert isinstance(outcome_from_output_untrusted(output, exit_code, nonce=LAB_NONCE), TeardownDone)
    assert guest_rules(lab) == []
    assert lab.guest.run("ip link show dev chip0").exit_code != 0


def test_kernel_chip0_completes_a_handshake_with_dmncs_own_peer(guest_lab: KernelLab) -> None:
    lab = guest_lab
    host_private_key = wg_genkey()
    params = SetupParams(base64.b64decode(wg_pubkey(host_private_key)), HOST_PORT, endpoint=HOST_UNDERLAY)
    exit_code, output = run_in_guest(lab, params, ScriptMode.SETUP)
    result = outcome_from_output_untrusted(output, exit_code, nonce=LAB_NONCE)
    assert isinstance(result, SetupResult), output
    assert result.mode is VmMode.KERNEL
    vm_peer = DmncPeer(base64.b64encode(result.vm_public_key).decode(), ["10.33.33.2/32"])
    with dmnc_wg(lab.host, render_dmnc_config(host_private_key, "10.33.33.1/32", HOST_PORT, [vm_peer])) as dmnc:
        lab.host.run(["ip", "route", "replace", "10.33.33.2/32", "dev", dmnc.interface])
        assert wait_for_ping(lab.host, "10.33.33.2", timeout=HANDSHAKE_TIMEOUT_SECONDS)
        # The guest's kernel saw the handshake too: its host peer has a handshake time and dmnc's endpoint.
        dump = lab.guest.check("wg show chip0 dump").splitlines()
        peer_fields = dump[1].split("\t")
        assert peer_fields[0] == params.host_public_key_base64
        assert int(peer_fields[4]) > 0


def test_check_mode_finds_kernel_wireguard_and_leaves_no_link_behind(guest_lab: KernelLab) -> None:
    lab = guest_lab
    links_before = lab.guest.check("ip -o link show")
    exit_code, output = lab.guest.run(
        shlex.join(["sh", SCRIPT_PATH, ScriptMode.CHECK.value, "--nonce", LAB_NONCE]), timeout=60
    )
    outcome = outcome_from_output_untrusted(output, exit_code, nonce=LAB_NONCE)
    assert isinstance(outcome, KernelWireGuardPresent), output
    assert outcome.kernel_release.startswith("6.1.")
    assert lab.guest.check("ip -o link show") == links_before
