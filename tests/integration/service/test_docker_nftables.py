"""Docker's nftables firewall backend end to end, through the real `dmnc` and a real dockerd (issue 15, part 2).

Docker Engine 29's backend cannot run here (the lab's engine is 20.10), so its drop rules for docker0 are emulated
with `nft` in the VM namespace (tests/lab/docker_nftables.py). An iptables ACCEPT (dmnc's DOCKER-USER rule, still in
place here) does not override that drop: only the mark does.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest

from tests.integration.doctor.test_doctor_lab import doctor
from tests.integration.service.test_direct_path import (
    DIRECT_VM_IP,
    PATH_CHANGE_TIMEOUT_S,
    ipv4_path,
    kernel_route_to,
)
from tests.integration.service.test_one_way_tunnel import (  # noqa: F401 (one_way_lab is a fixture)
    HOST_HTTP_PORT,
    HOST_TUNNEL_ADDRESS,
    drops,
    flush_vm_firewall,
    one_way_lab,
    probe_from_container,
)
from tests.integration.service.test_uninstall import uninstall
from tests.lab.docker_nftables import load_docker_rules, rule_counter, unload_docker_rules
from tests.lab.service_lab import (
    DIRECT_HOST_ADDRESS,
    VM_NFT_TABLE,
    ServiceLab,
    http_get,
    running_dmnc,
    start_web_container,
    vm_leftovers,
)
from tests.lab.setup_image import LAB_SETUP_IMAGE
from tests.lab.wait import wait_until

pytestmark = pytest.mark.lab

UNREACHABLE_TRY_S = "3"


def emulate_docker_nftables(lab: ServiceLab, *, accept_mark: bool) -> Iterator[None]:
    load_docker_rules(lab.vm, lab.workdir, "docker0", accept_mark=accept_mark)
    try:
        yield
    finally:
        unload_docker_rules(lab.vm)


@pytest.fixture
def marked(one_way_lab: ServiceLab) -> Iterator[ServiceLab]:  # noqa: F811 (the imported fixture)
    """The one-way lab (a host service containers must not reach) with Docker's nftables drops and a mark."""
    for _ in emulate_docker_nftables(one_way_lab, accept_mark=True):
        yield one_way_lab


@pytest.fixture
def unmarked(service_lab: ServiceLab) -> Iterator[ServiceLab]:
    """The lab with Docker's nftables drops and no accepted mark."""
    for _ in emulate_docker_nftables(service_lab, accept_mark=False):
        yield service_lab


def probe_ipv4(lab: ServiceLab) -> dict[str, bool]:
    """Can a container on the default bridge reach the host's services at its IPv4 tunnel address?"""
    return probe_from_container(lab, HOST_TUNNEL_ADDRESS, f"UDP4:{HOST_TUNNEL_ADDRESS}", None)


def dmnc_table(lab: ServiceLab) -> str:
    return lab.vm.run(["nft", "list", "table", "inet", VM_NFT_TABLE], check=False).stdout


def docker_drops(lab: ServiceLab) -> str:
    chain = lab.vm.run(["nft", "list", "chain", "ip", "docker-bridges", "filter-forward-in__docker0"]).stdout
    return next(line.strip() for line in chain.splitlines() if "UNPUBLISHED PORT DROP" in line)


def test_the_host_reaches_a_container_through_the_mark_and_containers_do_not_reach_the_host(marked: ServiceLab) -> None:
    web = start_web_container(marked)
    with running_dmnc(marked, "--path", "tunnel") as dmnc:
        http_get(marked, web)
        table = dmnc_table(marked)
        # The mark keeps every bit outside Docker's mask 0x3 (`& 0xfffffffc | 0x2`, which nft prints simplified).
        assert 'iifname "chip0" meta mark set meta mark & 0xfffffffe | 0x00000002' in table, table
        # The one-way rules hold in nftables alone: without the iptables chain, dmnc's own filter sees nothing.
        flush_vm_firewall(marked)
        assert probe_ipv4(marked) == {"tcp": False, "udp": False, "ping": False}
        assert drops(marked).get("inbound_not_allowed", 0) == 0, drops(marked)
        http_get(marked, web)  # replies still pass
        assert dmnc.stop(signal.SIGTERM) == 0
    assert dmnc_table(marked) == ""
    assert vm_leftovers(marked) == []
    assert "Traceback" not in dmnc.log()


def test_an_allowed_inbound_port_passes_dmncs_nftables_table(marked: ServiceLab) -> None:
    with running_dmnc(marked, "--path", "tunnel", "--allow-inbound", str(HOST_HTTP_PORT)) as dmnc:
        dmnc.wait_for_log("VM side ready")
        assert f"tcp dport {HOST_HTTP_PORT} ct state new accept" in dmnc_table(marked)
        flush_vm_firewall(marked)
        assert probe_ipv4(marked)["tcp"] is True
        assert dmnc.stop(signal.SIGTERM) == 0
    assert vm_leftovers(marked) == []


def test_without_an_accepted_mark_the_container_stays_unreachable_and_doctor_names_the_setting(
    unmarked: ServiceLab,
) -> None:
    web = start_web_container(unmarked)
    with running_dmnc(unmarked, "--path", "tunnel") as dmnc:
        dmnc.wait_for_log("VM side ready")
        dmnc.wait_for_log("without bridge-accept-fwmark")
        before = docker_drops(unmarked)
        attempt = unmarked.host.run(["curl", "-s", "--max-time", UNREACHABLE_TRY_S, f"http://{web}/"], check=False)
        assert attempt.returncode != 0, attempt.stdout
        # Docker's (emulated) drop is what stopped it.
        assert docker_drops(unmarked) != before
        report = json.loads(doctor(unmarked, "--json").stdout)
        (firewall,) = [check for check in report["checks"] if check["name"] == "docker-firewall"]
        assert firewall["verdict"] == "FAIL", firewall
        assert firewall["detail"].startswith("the VM's Docker runs its nftables firewall (firewall-backend: nftables)")
        assert firewall["fix"].startswith('add "bridge-accept-fwmark": "0x1000000/0x1000000" to the Docker daemon')
        assert dmnc.stop(signal.SIGTERM) == 0
    assert dmnc_table(unmarked) == ""
    assert vm_leftovers(unmarked) == []


def test_uninstall_removes_dmncs_table_that_a_killed_dmnc_left(unmarked: ServiceLab) -> None:
    with running_dmnc(unmarked, "--path", "tunnel") as dmnc:
        dmnc.wait_for_log("VM side ready")
        dmnc.kill()  # no teardown: chip0, the rules and the table stay in the VM
    assert f"table inet {VM_NFT_TABLE}" in dmnc_table(unmarked)
    result = uninstall(unmarked, unmarked.workdir / "root", "--setup-image", LAB_SETUP_IMAGE)
    assert result.returncode == 0, result.stderr
    assert "VM side: removed chip0" in result.stdout
    assert dmnc_table(unmarked) == ""
    assert vm_leftovers(unmarked) == []


DIRECT_HOST_IP = DIRECT_HOST_ADDRESS.split("/", maxsplit=1)[0]


def test_the_host_reaches_a_container_over_the_direct_link_through_the_mark(marked: ServiceLab) -> None:
    web = start_web_container(marked)
    vm_interface = marked.direct_interfaces[1]
    with running_dmnc(marked, "--path", "auto") as dmnc:
        dmnc.wait_for_log("VM side ready")
        wait_until(lambda: ipv4_path(marked)["path"] == "direct", PATH_CHANGE_TIMEOUT_S, "the direct path")
        wait_until(lambda: f"via {DIRECT_VM_IP}" in kernel_route_to(marked, web), 10, "the route via the VM's address")
        table = dmnc_table(marked)
        assert f'iifname "{vm_interface}" ip saddr {DIRECT_HOST_IP} meta mark set' in table, table
        before = rule_counter(marked.vm, "ip", "docker0", "ALLOW FW MARK")
        http_get(marked, web)  # past Docker's (emulated) drop, by the mark: no packet through the tunnel
        assert rule_counter(marked.vm, "ip", "docker0", "ALLOW FW MARK") > before
        # Towards the host on the direct link dmnc's filter sees nothing; the nftables table alone holds the door.
        flush_vm_firewall(marked)
        nothing = {"tcp": False, "udp": False, "ping": False}
        assert probe_from_container(marked, DIRECT_HOST_IP, f"UDP4:{DIRECT_HOST_IP}", None) == nothing
        http_get(marked, web)  # replies still pass
        assert dmnc.stop(signal.SIGTERM) == 0
    assert dmnc_table(marked) == ""
    assert vm_leftovers(marked) == []
    assert "Traceback" not in dmnc.log()
