"""The VM side of the one-way door (setup.sh): towards the host only replies of host flows, and the
--allow-inbound ports, leave the VM through the tunnel.

The lab of test_ipv6_vm_side ("host": `dmnc wg up`, which has no flow filter, so only the VM's rules stand between
the container and the host here; "VM": setup.sh's userspace entry; "container": a namespace behind a bridge in the
VM), plus Docker's own wiring of DOCKER-USER (FORWARD jumps to it) and services in the host namespace listening on
every address, as a developer's database or dev server would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmnc.tunnel.flowfilter import InboundPort
from dmnc.vm import ScriptMode, TeardownDone, outcome_from_output_untrusted
from dmnc.vm.params import DEFAULT_HOST_ADDRESS, DEFAULT_HOST_ADDRESS6
from tests.integration.vm.containerlab import CONTAINER_ADDRESS, CONTAINER_ADDRESS6, PAGE, fetch_page
from tests.integration.vm.scriptlab import LAB_NONCE, rule_lines, run_script
from tests.integration.vm.test_ipv6_vm_side import (
    SAVE_TOOLS,
    TUNNEL_TIMEOUT_SECONDS,
    Lab,
    dmnc_traces,
    open_lab,
    start_vm_side,
    stop_vm_side,
    wait_for_http_server,
)
from tests.lab.netns import Netns, wait_for_ping
from tests.lab.wait import wait_until

pytestmark = pytest.mark.lab

HOST_HTTP_PORT = 8088
HOST_UDP_PORT = 5514
HOST_PAGE = "dmnc-host-only-page"
ATTEMPT_TIMEOUT_SECONDS = 2
# A UDP echo server and client in a few lines of Python (the lab's interpreter), so the UDP check needs no extra tool.
UDP_ECHO_SERVER = """
import socket, sys
server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
server.bind(("::", int(sys.argv[1])))
while True:
    data, source = server.recvfrom(2048)
    server.sendto(data, source)
"""
UDP_ECHO_CLIENT = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
client = socket.socket(family, socket.SOCK_DGRAM)
client.settimeout(float(sys.argv[3]))
client.sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
sys.exit(0 if client.recv(2048) == b"hello" else 1)
"""


@dataclasses.dataclass
class OneWayLab:
    lab: Lab
    tmp_path: Path


@pytest.fixture
def one_way(tmp_path: Path) -> Iterator[OneWayLab]:
    with open_lab(tmp_path) as lab:
        # Docker's wiring: FORWARD consults DOCKER-USER first (Docker Engine docs, "Packet filtering and firewalls").
        for tool in ("iptables-nft", "ip6tables-nft"):
            for command in (["-N", "DOCKER"], ["-N", "DOCKER-USER"], ["-A", "FORWARD", "-j", "DOCKER-USER"]):
                lab.vm.run([tool, *command])
        www = tmp_path / "host-www"
        www.mkdir()
        (www / "index.html").write_text(HOST_PAGE + "\n")
        lab.host.popen(["busybox", "httpd", "-f", "-p", f"[::]:{HOST_HTTP_PORT}", "-h", str(www)])
        lab.host.popen([sys.executable, "-c", UDP_ECHO_SERVER, str(HOST_UDP_PORT)])
        wait_until(
            lambda: (
                f":{HOST_UDP_PORT} " in lab.host.run(["ss", "-Hlun"]).stdout
                and f":{HOST_HTTP_PORT} " in lab.host.run(["ss", "-Hltn"]).stdout
            ),
            10.0,
            "the host's services to listen",
        )
        yield OneWayLab(lab, tmp_path)


def host_page_from(namespace: Netns, address: str) -> bool:
    return fetch_page(namespace, address, port=HOST_HTTP_PORT, timeout=ATTEMPT_TIMEOUT_SECONDS) == HOST_PAGE


def udp_echo_from(namespace: Netns, address: str) -> bool:
    argv = [sys.executable, "-c", UDP_ECHO_CLIENT, address, str(HOST_UDP_PORT), str(ATTEMPT_TIMEOUT_SECONDS)]
    return namespace.run(argv, check=False, timeout=ATTEMPT_TIMEOUT_SECONDS + 5).returncode == 0


def ping_from(namespace: Netns, address: str) -> bool:
    argv = ["ping", "-c", "1", "-W", str(ATTEMPT_TIMEOUT_SECONDS), address]
    return namespace.run(argv, check=False, timeout=ATTEMPT_TIMEOUT_SECONDS + 5).returncode == 0


def dropped_towards_host(lab: Lab, tool: str) -> int:
    """Packets the final DROP of DMNC-TO-HOST has dropped (`tool` is iptables-nft or ip6tables-nft)."""
    listing = lab.vm.run([tool, "-w", "-L", "DMNC-TO-HOST", "-v", "-n", "-x"]).stdout.splitlines()
    return sum(int(line.split()[0]) for line in listing if " DROP " in f" {line} ")


@contextlib.contextmanager
def vm_side(one_way: OneWayLab, *inbound: InboundPort) -> Iterator[None]:
    lab = one_way.lab
    lab.params = dataclasses.replace(lab.params, allow_inbound=inbound)
    start_vm_side(lab)
    assert wait_for_ping(lab.host, CONTAINER_ADDRESS, timeout=TUNNEL_TIMEOUT_SECONDS)
    assert wait_for_ping(lab.host, CONTAINER_ADDRESS6, timeout=TUNNEL_TIMEOUT_SECONDS)
    try:
        yield
    finally:
        stop_vm_side(lab)


HOST_ADDRESSES = [str(DEFAULT_HOST_ADDRESS), str(DEFAULT_HOST_ADDRESS6)]


def test_containers_and_the_vm_cannot_reach_host_services_but_the_host_reaches_containers(one_way: OneWayLab) -> None:
    lab = one_way.lab
    with vm_side(one_way):
        wait_for_http_server(lab)
        assert fetch_page(lab.host, CONTAINER_ADDRESS) == PAGE
        assert fetch_page(lab.host, CONTAINER_ADDRESS6) == PAGE
        for address in HOST_ADDRESSES:
            assert not host_page_from(lab.container, address), address
            assert not udp_echo_from(lab.container, address), address
            assert not ping_from(lab.container, address), address
            # The VM's own namespace (host-network containers) is held back by OUTPUT -o chip0 the same way.
            assert not host_page_from(lab.vm, address), address
            assert not ping_from(lab.vm, address), address
        # Dropped by the VM's rules, not merely unanswered: every attempt met the chain's DROP.
        assert dropped_towards_host(lab, "iptables-nft") >= 5
        assert dropped_towards_host(lab, "ip6tables-nft") >= 5
        # Replies still flow: the host fetches again after all that.
        assert fetch_page(lab.host, CONTAINER_ADDRESS) == PAGE


def test_allowed_inbound_ports_pass_and_only_they(one_way: OneWayLab) -> None:
    lab = one_way.lab
    with vm_side(one_way, InboundPort(HOST_HTTP_PORT)):
        for address in HOST_ADDRESSES:
            assert host_page_from(lab.container, address), address
            assert not udp_echo_from(lab.container, address), address  # 5514 is not allowed
    # A setup with a different list replaces the chain's rules (the fallback container restarts with new argv).
    with vm_side(one_way, InboundPort(HOST_UDP_PORT, "udp")):
        for address in HOST_ADDRESSES:
            assert udp_echo_from(lab.container, address), address
            assert not host_page_from(lab.container, address), address
        chain = [line for line in rule_lines(lab.vm, "iptables-nft-save") if line.startswith("-A DMNC-TO-HOST")]
        assert chain == [
            "-A DMNC-TO-HOST -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            f"-A DMNC-TO-HOST -p udp -m udp --dport {HOST_UDP_PORT} -m conntrack --ctstate NEW -j ACCEPT",
            "-A DMNC-TO-HOST -j DROP",
        ]


def test_teardown_leaves_nothing_of_dmnc_in_any_ruleset(one_way: OneWayLab) -> None:
    lab = one_way.lab
    with vm_side(one_way, InboundPort(HOST_HTTP_PORT), InboundPort(HOST_UDP_PORT, "udp")):
        assert any("DMNC-TO-HOST" in line for line in rule_lines(lab.vm, "ip6tables-nft-save"))
    completed = run_script(lab.vm, lab.params, ScriptMode.TEARDOWN)
    assert completed.returncode == 0, completed.stderr
    assert isinstance(outcome_from_output_untrusted(completed.stdout, 0, nonce=LAB_NONCE), TeardownDone)
    assert dmnc_traces(lab) == []
    for save in SAVE_TOOLS:
        assert "DMNC" not in lab.vm.run([save]).stdout, save


def test_invalid_inbound_ports_are_refused_by_the_script_too(one_way: OneWayLab) -> None:
    lab = one_way.lab
    for bad in ("0/tcp", "65536/udp", "80/sctp", "80", "8o/tcp", "-j/tcp", "080/tcp"):
        completed = run_script(lab.vm, lab.params, ScriptMode.SETUP, extra=["--allow-inbound", bad])
        assert completed.returncode == 2, (bad, completed.stderr)
        assert f"invalid --allow-inbound '{bad}'" in completed.stderr
    assert not any("DMNC" in line for line in rule_lines(lab.vm, "iptables-nft-save"))
