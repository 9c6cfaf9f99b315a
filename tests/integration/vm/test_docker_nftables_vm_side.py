"""The VM side and Docker's nftables firewall backend (setup.sh, "Docker's nftables firewall backend"), run directly
in lab namespaces: how the script reads the daemon's accepted mark from Docker's rules, and the lifecycle of its own
table `inet dmnc` (replaced whole on every setup, gone when Docker's tables are, removed by teardown).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dmnc.vm import ScriptMode
from dmnc.vm.nftables import DockerNftables
from dmnc.vm.params import SetupParams
from dmnc.vm.result import KernelWireGuardMissing, KernelWireGuardPresent, SetupResult, outcome_from_output_untrusted
from tests.conftest import require_root, require_tools
from tests.integration.vm.scriptlab import LAB_NONCE, run_script
from tests.integration.vm.test_ipv6_vm_side import Lab, container_lab, start_vm_side, stop_vm_side  # noqa: F401
from tests.lab.netns import Netns, netns

pytestmark = pytest.mark.lab

HOST_KEY = bytes(range(32))


def docker_table(family: str, rules: str) -> str:
    return (
        f"table {family} docker-bridges {{\n  chain filter-forward-in__docker0 {{\n    {rules}\n  }}\n}}\n"
        if rules
        else f"table {family} docker-bridges {{\n  chain filter-forward-in__docker0 {{\n  }}\n}}\n"
    )


@pytest.fixture
def vm() -> Iterator[Netns]:
    require_root()
    require_tools("nft", "ip")
    with netns("dmnf") as namespace:
        yield namespace


def load(namespace: Netns, path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    namespace.run(["nft", "-f", str(path)])


def check_outcome(namespace: Netns) -> KernelWireGuardPresent | KernelWireGuardMissing:
    completed = run_script(namespace, SetupParams(HOST_KEY, 3333), ScriptMode.CHECK)
    outcome = outcome_from_output_untrusted(completed.stdout + completed.stderr, completed.returncode, nonce=LAB_NONCE)
    assert isinstance(outcome, KernelWireGuardPresent | KernelWireGuardMissing), completed
    return outcome


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        ("", None),
        (docker_table("ip", ""), DockerNftables.UNMARKED),
        (docker_table("ip", 'meta mark 0x00000001 counter accept comment "ALLOW FW MARK"'), DockerNftables.MARKED),
        (
            docker_table("ip6", 'meta mark & 0x00000300 == 0x00000100 accept comment "ALLOW FW MARK"'),
            DockerNftables.MARKED,
        ),
        # The comment alone is not a mark: a rule of another shape is not taken for Docker's accept rule.
        (docker_table("ip", 'iifname "x" counter accept comment "ALLOW FW MARK"'), DockerNftables.UNMARKED),
    ],
)
def test_the_check_reads_dockers_nftables_state_from_its_rules(
    vm: Netns, tmp_path: Path, tables: str, expected: DockerNftables | None
) -> None:
    if tables:
        load(vm, tmp_path / "docker.nft", tables)
    assert check_outcome(vm).docker_nftables is expected
    assert "dmnc" not in vm.run(["nft", "list", "tables"]).stdout


def dmnc_table(lab: Lab) -> str:
    return lab.vm.run(["nft", "list", "table", "inet", "dmnc"], check=False).stdout


def test_dmncs_table_is_replaced_whole_follows_dockers_tables_and_goes_with_teardown(
    container_lab: Lab,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    lab = container_lab
    load(lab.vm, tmp_path / "docker.nft", docker_table("ip", 'meta mark 0x00000001 accept comment "ALLOW FW MARK"'))
    result = start_vm_side(lab)
    assert isinstance(result, SetupResult)
    assert result.docker_nftables is DockerNftables.MARKED
    stop_vm_side(lab)
    # A second setup run (a restart) leaves one table, with the mark once.
    start_vm_side(lab)
    table = dmnc_table(lab)
    assert lab.vm.run(["nft", "list", "tables"]).stdout.count("inet dmnc") == 1
    assert table.count("meta mark set") == 1, table
    stop_vm_side(lab)
    # Docker back on iptables: the next setup removes dmnc's table.
    lab.vm.run(["nft", "delete", "table", "ip", "docker-bridges"])
    result = start_vm_side(lab)
    assert result.docker_nftables is None
    assert dmnc_table(lab) == ""
    stop_vm_side(lab)
    # Teardown deletes the table whatever Docker does meanwhile.
    load(lab.vm, tmp_path / "docker.nft", docker_table("ip", ""))
    start_vm_side(lab)
    assert "oifname" in dmnc_table(lab)
    stop_vm_side(lab)
    teardown = run_script(lab.vm, lab.params, ScriptMode.TEARDOWN)
    assert teardown.returncode == 0, teardown.stderr
    assert dmnc_table(lab) == ""
