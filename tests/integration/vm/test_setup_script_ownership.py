"""The setup script leaves another tool's VM interface alone: dmnc marks its own with an ifalias.

Run as root in a network namespace (no Docker). The stand-in for docker-mac-net-connect's chip0 is a
persistent TUN holding the VM tunnel address: this kernel has no WireGuard, and what the script reads is only the mark.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dmnc.vm import ForeignInterface, ScriptMode, SetupParams, SetupResult, outcome_from_output_untrusted
from tests.conftest import require_root, require_tools
from tests.integration.vm.scriptlab import LAB_NONCE, run_script, start_userspace, stop_userspace
from tests.lab.netns import Netns, netns, unique_name

pytestmark = pytest.mark.lab

HOST_PORT = 51820
HOST_KEY = bytes(range(32))
# TEST-NET-1 (RFC 5737): written into the peer, never reached.
UNREACHED_ENDPOINT = "192.0.2.1"


@pytest.fixture
def vm_and_params() -> Iterator[tuple[Netns, SetupParams]]:
    """A "VM" namespace alone: what is checked here happens before the script dials anything."""
    require_root()
    require_tools("ip", "wg", "wireguard-go", "iptables-legacy", "iptables-nft", "dash")
    with netns("dmow") as vm:
        yield vm, SetupParams(HOST_KEY, HOST_PORT, endpoint=UNREACHED_ENDPOINT, interface=unique_name("dw"))


def add_stand_in(vm: Netns, interface: str) -> str:
    """Another tool's interface: holds the VM tunnel address, carries no dmnc mark. Returns its `ip addr` line."""
    # A persistent TUN (ip-tuntap(8)): this kernel has no dummy or wireguard links.
    vm.run(["ip", "tuntap", "add", "dev", interface, "mode", "tun"])
    vm.run(["ip", "addr", "add", "10.33.33.2", "peer", "10.33.33.1", "dev", interface])
    vm.run(["ip", "link", "set", interface, "up"])
    return interface_state(vm, interface)


def interface_state(vm: Netns, interface: str) -> str:
    return vm.run(["ip", "-d", "addr", "show", "dev", interface]).stdout


@pytest.mark.parametrize("mode", [ScriptMode.SETUP, ScriptMode.TEARDOWN])
def test_a_foreign_interface_is_reported_and_left_exactly_as_it_was(
    vm_and_params: tuple[Netns, SetupParams], mode: ScriptMode
) -> None:
    vm, params = vm_and_params
    before = add_stand_in(vm, params.interface)
    completed = run_script(vm, params, mode)
    assert completed.returncode == 0, completed.stderr
    outcome = outcome_from_output_untrusted(completed.stdout, completed.returncode, nonce=LAB_NONCE)
    assert isinstance(outcome, ForeignInterface)
    assert outcome.interface == params.interface
    assert "is not dmnc's" in completed.stderr
    assert interface_state(vm, params.interface) == before


def test_the_userspace_entry_leaves_a_foreign_interface_alone_too(
    vm_and_params: tuple[Netns, SetupParams], tmp_path: Path
) -> None:
    vm, params = vm_and_params
    before = add_stand_in(vm, params.interface)
    process, outcome, output = start_userspace(vm, params, tmp_path)
    assert isinstance(outcome, ForeignInterface), output
    process.wait(timeout=10)
    assert interface_state(vm, params.interface) == before


def test_dmncs_own_interface_carries_the_mark_and_is_set_up_again(
    vm_and_params: tuple[Netns, SetupParams], tmp_path: Path
) -> None:
    vm, params = vm_and_params
    process, outcome, output = start_userspace(vm, params, tmp_path)
    assert isinstance(outcome, SetupResult), output
    assert "alias dmnc" in vm.run(["ip", "link", "show", "dev", params.interface]).stdout
    stop_userspace(vm, process)
