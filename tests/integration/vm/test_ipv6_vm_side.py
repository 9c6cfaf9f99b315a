"""IPv6 replies from the VM side, userspace (wireguard-go) mode, in lab namespaces.

"host": `dmnc wg up`, dmnc's own WireGuard peer, with the host's tunnel addresses and a route per container subnet.
"VM": setup.sh's userspace entry. "container": a namespace behind a dual-stack bridge in the VM, serving HTTP. The
host must reach the container by its IPv6 address as by its IPv4 one, which needs the VM's route back to the host's
IPv6 tunnel address (installed by setup.sh; the kernel does not keep it, see ensure_peer_route6 there).
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dmnc.vm import ScriptMode, SetupParams, SetupResult, TeardownDone, outcome_from_output_untrusted
from tests.conftest import require_root, require_tools
from tests.integration.tunnel.peers import DmncWg, dmnc_wg
from tests.integration.vm.containerlab import (
    CONTAINER_ADDRESS,
    CONTAINER_ADDRESS6,
    HTTP_PORT,
    PAGE,
    ContainerNames,
    build_container_network,
    fetch_page,
    host_peer_config,
    peer_route_lines,
    route_container_subnets,
)
from tests.integration.vm.scriptlab import LAB_NONCE, rule_lines, run_script, start_userspace, stop_userspace
from tests.lab.netns import Netns, add_veth, netns, unique_name, unique_suffix, wait_for_ping
from tests.lab.wait import wait_until
from tests.lab.wggo import wg_genkey, wg_pubkey

pytestmark = pytest.mark.lab

HOST_PORT = 51820
# The VM's first handshake goes out when setup.sh configures the peer; retries follow every 5 s (REKEY_TIMEOUT,
# WireGuard whitepaper section 6.1), so this allows a few lost ones on a loaded machine.
TUNNEL_TIMEOUT_SECONDS = 20.0
SERVER_TIMEOUT_SECONDS = 10.0
SAVE_TOOLS = ("iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save", "ip6tables-legacy-save")


@dataclass
class Lab:
    vm: Netns
    host: Netns
    container: Netns
    dmnc: DmncWg
    params: SetupParams
    state_dir: Path


@pytest.fixture
def container_lab(tmp_path: Path) -> Iterator[Lab]:
    with open_lab(tmp_path) as opened:
        yield opened


@contextlib.contextmanager
def open_lab(tmp_path: Path) -> Iterator[Lab]:
    """Host (`dmnc wg up`), VM and a container behind a dual-stack bridge in the VM, serving HTTP."""
    require_root()
    require_tools("ip", "wg", "wireguard-go", "iptables-nft", "ip6tables-nft", "busybox", "curl", "ping", "ss")
    host_key = wg_genkey()
    # The VM key is made the way setup.sh makes it, before the script runs, so dmnc knows its peer from the start.
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    vm_key = wg_genkey()
    key_file = state_dir / "private.key"
    key_file.write_text(vm_key + "\n")
    key_file.chmod(0o600)
    with netns("dmvm") as vm, netns("dmho") as host, netns("dmct") as container:
        link = add_veth(host, vm, "10.201.0.1/24", "10.201.0.2/24")
        suffix = unique_suffix()
        build_container_network(vm.run, ContainerNames(container.name, f"br{suffix}", f"vc{suffix}", f"ce{suffix}"))
        www = tmp_path / "www"
        www.mkdir()
        (www / "index.html").write_text(PAGE + "\n")
        container.popen(["busybox", "httpd", "-f", "-p", str(HTTP_PORT), "-h", str(www)])
        with dmnc_wg(host, host_peer_config(host_key, wg_pubkey(vm_key), HOST_PORT)) as dmnc:
            route_container_subnets(host, dmnc.interface)
            params = SetupParams(
                base64.b64decode(wg_pubkey(host_key)),
                HOST_PORT,
                endpoint=str(link.left_address.ip),
                interface=unique_name("dv"),
            )
            yield Lab(vm, host, container, dmnc, params, state_dir)


def start_vm_side(lab: Lab) -> SetupResult:
    process, outcome, output = start_userspace(lab.vm, lab.params, lab.state_dir)
    assert isinstance(outcome, SetupResult), output
    assert process.poll() is None, output
    return outcome


def stop_vm_side(lab: Lab) -> None:
    for process in list(lab.vm.processes):
        stop_userspace(lab.vm, process)


def wait_for_http_server(lab: Lab) -> None:
    wait_until(
        lambda: f":{HTTP_PORT} " in lab.container.run(["ss", "-Hltn"]).stdout,
        SERVER_TIMEOUT_SECONDS,
        "the container's HTTP server to listen",
    )


def vm_peer_routes(lab: Lab) -> list[str]:
    return peer_route_lines(lab.vm.run(["ip", "-6", "route", "show", "table", "all"]).stdout)


def dmnc_traces(lab: Lab) -> list[str]:
    """Every route and rule line in the VM that still names the tunnel interface or a host tunnel address."""
    markers = (lab.params.interface, str(lab.params.host_address), str(lab.params.host_address6))
    lines = [
        *lab.vm.run(["ip", "-6", "route", "show", "table", "all"]).stdout.splitlines(),
        *lab.vm.run(["ip", "route", "show", "table", "all"]).stdout.splitlines(),
    ]
    for save in SAVE_TOOLS:
        lines += [f"{save}: {line}" for line in rule_lines(lab.vm, save)]
    return [line for line in lines if any(marker in line for marker in markers)]


def test_the_host_reaches_a_container_by_its_ipv6_address_through_the_userspace_vm_side(container_lab: Lab) -> None:
    result = start_vm_side(container_lab)
    assert result.ipv6
    assert wait_for_ping(container_lab.host, CONTAINER_ADDRESS6, timeout=TUNNEL_TIMEOUT_SECONDS)
    assert wait_for_ping(container_lab.host, CONTAINER_ADDRESS)
    wait_for_http_server(container_lab)
    assert fetch_page(container_lab.host, CONTAINER_ADDRESS6) == PAGE
    assert fetch_page(container_lab.host, CONTAINER_ADDRESS) == PAGE
    stop_vm_side(container_lab)


def test_the_route_to_the_host_is_there_once_after_each_setup_and_gone_after_teardown(container_lab: Lab) -> None:
    interface = container_lab.params.interface
    for _run in range(2):
        # A restarted fallback container runs setup again on a fresh interface: one route each time, tunnel works.
        start_vm_side(container_lab)
        routes = vm_peer_routes(container_lab)
        assert len(routes) == 1, routes
        assert f"dev {interface} " in routes[0]
        assert wait_for_ping(container_lab.host, CONTAINER_ADDRESS6, timeout=TUNNEL_TIMEOUT_SECONDS)
        stop_vm_side(container_lab)
    start_vm_side(container_lab)
    assert any("MASQUERADE" in line for line in rule_lines(container_lab.vm, "ip6tables-nft-save"))

    # dmnc's teardown: the fallback container stops, then the script's teardown mode runs.
    stop_vm_side(container_lab)
    completed = run_script(container_lab.vm, container_lab.params, ScriptMode.TEARDOWN)
    assert completed.returncode == 0, completed.stderr
    assert isinstance(outcome_from_output_untrusted(completed.stdout, 0, nonce=LAB_NONCE), TeardownDone)
    assert vm_peer_routes(container_lab) == []
    assert dmnc_traces(container_lab) == []
    assert "DOCKER-USER" not in container_lab.vm.run(["ip6tables-nft-save"]).stdout


def test_teardown_with_the_fallback_still_running_removes_the_route_and_rules(container_lab: Lab) -> None:
    start_vm_side(container_lab)
    assert len(vm_peer_routes(container_lab)) == 1
    completed = run_script(container_lab.vm, container_lab.params, ScriptMode.TEARDOWN)
    assert completed.returncode == 0, completed.stderr
    assert vm_peer_routes(container_lab) == []
    assert dmnc_traces(container_lab) == []
    stop_vm_side(container_lab)


def test_a_vm_with_ipv6_disabled_keeps_the_ipv4_tunnel_to_the_container_working(container_lab: Lab) -> None:
    for scope in ("all", "default"):
        container_lab.vm.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{scope}.disable_ipv6=1"])
    result = start_vm_side(container_lab)
    assert result.ipv6 is False
    assert vm_peer_routes(container_lab) == []
    assert rule_lines(container_lab.vm, "ip6tables-nft-save") == []
    assert wait_for_ping(container_lab.host, CONTAINER_ADDRESS, timeout=TUNNEL_TIMEOUT_SECONDS)
    wait_for_http_server(container_lab)
    assert fetch_page(container_lab.host, CONTAINER_ADDRESS) == PAGE
    stop_vm_side(container_lab)
