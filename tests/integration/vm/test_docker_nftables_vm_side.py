"""The VM side and Docker's nftables firewall backend (setup.sh, "Docker's nftables firewall backend"), run directly
in lab namespaces: how the script reads the daemon's accepted mark from Docker's rules, and the lifecycle of its own
table `inet dmnc` (replaced whole on every setup, gone when Docker's tables are, removed by teardown), and the
direct links' share of that table: the host's packets arriving on a link it shares with the VM pass Docker's drops
through the mark, and towards the host on that link only replies and the --allow-inbound ports pass.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmnc.tunnel.flowfilter import InboundPort
from dmnc.vm import ScriptMode
from dmnc.vm.nftables import DockerNftables
from dmnc.vm.params import SetupParams
from dmnc.vm.result import KernelWireGuardMissing, KernelWireGuardPresent, SetupResult, outcome_from_output_untrusted
from tests.conftest import require_root, require_tools
from tests.integration.vm.containerlab import (
    CONTAINER_ADDRESS,
    CONTAINER_ADDRESS6,
    CONTAINER_SUBNET,
    CONTAINER_SUBNET6,
    PAGE,
    fetch_page,
)
from tests.integration.vm.scriptlab import LAB_NONCE, run_script
from tests.integration.vm.test_ipv6_vm_side import (  # noqa: F401 (container_lab is a fixture)
    SAVE_TOOLS,
    Lab,
    container_lab,
    start_vm_side,
    stop_vm_side,
    wait_for_http_server,
)
from tests.lab.docker_nftables import DROP_COMMENT, load_docker_rules, rule_counter, unload_docker_rules
from tests.lab.netns import Netns, netns
from tests.lab.wait import wait_until

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


# The lab's veth between "host" and "VM" (10.201.0.1/24 and .2, open_lab) is the link they share; IPv6 is added.
DIRECT_HOST = ipaddress.ip_address("10.201.0.1")
DIRECT_VM = "10.201.0.2"
DIRECT_HOST6 = ipaddress.ip_address("fd01::1")
DIRECT_VM6 = "fd01::2"
DIRECT_PREFIX6 = 64
HOST_PORT_CLOSED = 8088  # not allowed inbound: containers must not open connections to it
HOST_PORT_ALLOWED = 8089  # --allow-inbound
HOST_PAGE = "dmnc-direct-host-page"
ATTEMPT_TIMEOUT_SECONDS = 2
FAMILIES = ("ip", "ip6")


def interface_holding(namespace: Netns, address: str) -> str:
    """The name of the interface that holds `address` in `namespace`."""
    return namespace.run(["ip", "-o", "addr", "show", "to", address]).stdout.split()[1]


def only_bridge(namespace: Netns) -> str:
    (bridge,) = [
        line.split()[1].rstrip(":")
        for line in namespace.run(["ip", "-o", "link", "show", "type", "bridge"]).stdout.splitlines()
    ]
    return bridge


@dataclasses.dataclass
class DirectLab:
    lab: Lab
    vm_interface: str
    bridge: str


@pytest.fixture
def direct_lab(container_lab: Lab, tmp_path: Path) -> Iterator[DirectLab]:  # noqa: F811 (the imported fixture)
    """The container lab with the veth as a direct link: the host routes the container subnets via the VM's address
    there (what dmnc's path keeper does on the direct path), serves HTTP on two ports, and the VM has Docker's
    emulated nftables drops for the container's bridge, with an accepted mark; nothing jumps to DOCKER-USER, as
    under Docker's nftables backend."""
    lab = container_lab
    vm_interface = interface_holding(lab.vm, DIRECT_VM)
    host_interface = interface_holding(lab.host, str(DIRECT_HOST))
    lab.vm.run(["ip", "addr", "add", f"{DIRECT_VM6}/{DIRECT_PREFIX6}", "dev", vm_interface, "nodad"])
    lab.host.run(["ip", "addr", "add", f"{DIRECT_HOST6}/{DIRECT_PREFIX6}", "dev", host_interface, "nodad"])
    lab.host.run(["ip", "route", "replace", str(CONTAINER_SUBNET), "via", DIRECT_VM])
    lab.host.run(["ip", "-6", "route", "replace", str(CONTAINER_SUBNET6), "via", DIRECT_VM6])
    www = tmp_path / "host-www"
    www.mkdir()
    (www / "index.html").write_text(HOST_PAGE + "\n")
    for port in (HOST_PORT_CLOSED, HOST_PORT_ALLOWED):
        lab.host.popen(["busybox", "httpd", "-f", "-p", f"[::]:{port}", "-h", str(www)])
    wait_until(
        lambda: all(
            f":{port} " in lab.host.run(["ss", "-Hltn"]).stdout for port in (HOST_PORT_CLOSED, HOST_PORT_ALLOWED)
        ),
        10.0,
        "the host's HTTP servers to listen",
    )
    bridge = only_bridge(lab.vm)
    load_docker_rules(lab.vm, tmp_path, bridge, accept_mark=True, families=FAMILIES)
    lab.params = dataclasses.replace(
        lab.params, direct_hosts=(DIRECT_HOST, DIRECT_HOST6), allow_inbound=(InboundPort(HOST_PORT_ALLOWED),)
    )
    try:
        yield DirectLab(lab, vm_interface, bridge)
    finally:
        unload_docker_rules(lab.vm, FAMILIES)


def host_page_from_container(lab: Lab, address: str, port: int) -> bool:
    return fetch_page(lab.container, address, port=port, timeout=ATTEMPT_TIMEOUT_SECONDS) == HOST_PAGE


def direct_masquerades(lab: Lab, tool: str) -> int:
    """Packets dmnc's iptables MASQUERADE for the direct link has bound (`tool` is iptables-nft or ip6tables-nft)."""
    listing = lab.vm.run([tool, "-w", "-t", "nat", "-L", "DMNC-DIRECT", "-v", "-n", "-x"]).stdout.splitlines()
    return sum(int(line.split()[0]) for line in listing if "MASQUERADE" in line.split())


def test_a_direct_link_gets_the_mark_and_the_one_way_rules_in_dmncs_table(direct_lab: DirectLab) -> None:
    lab, interface, bridge = direct_lab.lab, direct_lab.vm_interface, direct_lab.bridge
    result = start_vm_side(lab)
    assert result.docker_nftables is DockerNftables.MARKED
    assert {str(link.host_address) for link in result.direct_links} == {str(DIRECT_HOST), str(DIRECT_HOST6)}
    table = dmnc_table(lab)
    for family, host in (("ip", DIRECT_HOST), ("ip6", DIRECT_HOST6)):
        # Docker's mask 0x3 and value 0x2: nft prints `& 0xfffffffc | 0x2` simplified, as for chip0.
        assert f'iifname "{interface}" {family} saddr {host} meta mark set meta mark & 0xfffffffe | 0x00000002' in table
        towards = f'oifname "{interface}" {family} daddr {host}'
        assert f"{towards} ct state established,related accept" in table, table
        assert f"{towards} tcp dport {HOST_PORT_ALLOWED} ct state new accept" in table, table
        assert f"{towards} drop" in table, table
    wait_for_http_server(lab)
    before = {family: rule_counter(lab.vm, family, bridge, "ALLOW FW MARK") for family in FAMILIES}
    # The host reaches the container over the direct link (not the tunnel): Docker's drop let it pass by the mark.
    for family, address in (("ip", CONTAINER_ADDRESS), ("ip6", CONTAINER_ADDRESS6)):
        assert fetch_page(lab.host, address) == PAGE, address
        assert rule_counter(lab.vm, family, bridge, "ALLOW FW MARK") > before[family], family
        assert rule_counter(lab.vm, family, bridge, DROP_COMMENT) == 0, family
    # iptables' MASQUERADE still binds the host's connections beside nftables' chains (nft_direct_rules says why).
    assert direct_masquerades(lab, "iptables-nft") > 0
    assert direct_masquerades(lab, "ip6tables-nft") > 0
    # Towards the host on the direct link: replies passed above; new connections only to the allowed port.
    for address in (str(DIRECT_HOST), str(DIRECT_HOST6)):
        assert not host_page_from_container(lab, address, HOST_PORT_CLOSED), address
        assert host_page_from_container(lab, address, HOST_PORT_ALLOWED), address
    stop_vm_side(lab)
    teardown = run_script(lab.vm, lab.params, ScriptMode.TEARDOWN)
    assert teardown.returncode == 0, teardown.stderr
    assert dmnc_table(lab) == ""
    for save in SAVE_TOOLS:
        assert "DMNC" not in lab.vm.run([save]).stdout, save


def test_without_the_tunnels_ipv6_half_a_direct_ipv6_link_gets_no_nftables_rules(direct_lab: DirectLab) -> None:
    lab = direct_lab.lab
    lab.params = dataclasses.replace(lab.params, host_address6=None, vm_address6=None)
    result = start_vm_side(lab)
    assert [str(link.host_address) for link in result.direct_links] == [str(DIRECT_HOST)]
    table = dmnc_table(lab)
    assert f"ip saddr {DIRECT_HOST}" in table, table
    assert "ip6 " not in table, table
    stop_vm_side(lab)
