"""The setup script's `check` mode (used by `dmnc doctor`) in a lab namespace whose kernel has no WireGuard.

It must answer `kernel-missing` with exit 0 and leave the namespace exactly as it found it, chip0 included. The
kernel-ok answer on a kernel with WireGuard is tested in the qemu guest (test_setup_script_kernel.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dmnc.vm import (
    ForeignInterface,
    KernelWireGuardMissing,
    ScriptMode,
    TeardownParams,
    outcome_from_output_untrusted,
    script_command,
)
from tests.conftest import require_root, require_tools
from tests.integration.vm.scriptlab import LAB_NONCE
from tests.lab.netns import Netns, netns

pytestmark = pytest.mark.lab


@pytest.fixture
def vm() -> Iterator[Netns]:
    require_root()
    require_tools("ip", "dash")
    with netns("dmck") as namespace:
        yield namespace


def link_names(namespace: Netns) -> list[str]:
    return sorted(line.split(": ")[1].split("@")[0] for line in namespace.run(["ip", "-o", "link"]).stdout.splitlines())


def test_check_without_kernel_wireguard_reports_kernel_missing_and_changes_nothing(vm: Netns) -> None:
    # dmnc's own chip0 of the userspace fallback (a TUN carrying dmnc's mark) stands for an existing VM side the
    # check must not touch.
    vm.run(["ip", "tuntap", "add", "dev", "chip0", "mode", "tun"])
    vm.run(["ip", "link", "set", "dev", "chip0", "alias", "dmnc"])
    before = link_names(vm)
    completed = vm.run(script_command(TeardownParams(), ScriptMode.CHECK, nonce=LAB_NONCE), check=False, timeout=30)
    assert completed.returncode == 0, completed.stderr
    outcome = outcome_from_output_untrusted(completed.stdout + completed.stderr, completed.returncode, nonce=LAB_NONCE)
    assert isinstance(outcome, KernelWireGuardMissing)
    assert "no kernel WireGuard in this VM" in completed.stderr
    assert link_names(vm) == before


def test_check_reports_another_tools_chip0_and_changes_nothing(vm: Netns) -> None:
    # docker-mac-net-connect's chip0 (here a TUN holding the VM tunnel address, without dmnc's mark).
    vm.run(["ip", "tuntap", "add", "dev", "chip0", "mode", "tun"])
    vm.run(["ip", "addr", "add", "10.33.33.2", "peer", "10.33.33.1", "dev", "chip0"])
    before = vm.run(["ip", "-d", "addr", "show"]).stdout
    completed = vm.run(script_command(TeardownParams(), ScriptMode.CHECK, nonce=LAB_NONCE), check=False, timeout=30)
    assert completed.returncode == 0, completed.stderr
    outcome = outcome_from_output_untrusted(completed.stdout + completed.stderr, completed.returncode, nonce=LAB_NONCE)
    assert isinstance(outcome, ForeignInterface), completed.stdout
    assert outcome.interface == "chip0"
    assert "chip0 exists and is not dmnc's" in completed.stderr
    assert vm.run(["ip", "-d", "addr", "show"]).stdout == before
