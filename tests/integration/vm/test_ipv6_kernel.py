"""IPv6 replies from the VM side, kernel WireGuard mode: setup.sh in the qemu guest (Debian's 6.1 kernel).

The guest plays the Docker VM and has no dockerd: a network namespace behind a dual-stack bridge in the guest
stands in for a container (the same wiring as the namespace lab, tests/integration/vm/containerlab.py). The test's
namespace plays the host with `dmnc wg up`, dmnc's own WireGuard peer. One boot is shared by the module: the
guest_lab fixture of test_setup_script_kernel.py, imported rather than written again.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

from dmnc.vm import (
    ScriptMode,
    SetupParams,
    SetupResult,
    TeardownDone,
    VmMode,
    outcome_from_output_untrusted,
)
from tests.conftest import require_tools
from tests.integration.tunnel.peers import dmnc_wg
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
from tests.integration.vm.scriptlab import LAB_NONCE
from tests.integration.vm.test_setup_script_kernel import (
    HOST_PORT,
    HOST_UNDERLAY,
    KernelLab,
    guest_lab,  # noqa: F401 # the module-scoped guest fixture, shared rather than booted twice
    run_in_guest,
)
from tests.lab.netns import wait_for_ping
from tests.lab.wggo import wg_genkey, wg_pubkey

pytestmark = [pytest.mark.lab, pytest.mark.slow]

WWW_DIRECTORY = "/run/www"
# The guest's first handshake is lost (dmnc starts once the result names the guest's key); the retry follows after
# REKEY_TIMEOUT, 5 s (WireGuard whitepaper section 6.1), and TCG makes the guest slow on a loaded machine.
TUNNEL_TIMEOUT_SECONDS = 30.0
# Names inside the guest: it is its own kernel, so fixed names cannot collide with other test runs.
CONTAINER = ContainerNames(namespace="ctr", bridge="br-ctr", vm_veth="vctr", container_veth="ectr")
SAVE_TOOLS = ("iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save", "ip6tables-legacy-save")


@dataclass
class ContainerLab(KernelLab):
    host_private_key: str
    params: SetupParams


@pytest.fixture
def container_lab(guest_lab: KernelLab) -> Iterator[ContainerLab]:  # noqa: F811 # the imported fixture
    """The shared guest with a fresh stand-in container serving HTTP; removed again, with chip0, afterwards."""
    require_tools("curl")
    guest = guest_lab.guest
    guest.check(f"mkdir -p {WWW_DIRECTORY}")
    guest.put_file(f"{WWW_DIRECTORY}/index.html", (PAGE + "\n").encode())
    host_private_key = wg_genkey()
    params = SetupParams(base64.b64decode(wg_pubkey(host_private_key)), HOST_PORT, endpoint=HOST_UNDERLAY)
    guest.check(f"ip netns add {CONTAINER.namespace}")
    try:
        build_container_network(lambda argv: guest.check(shlex.join(argv)), CONTAINER)
        # Without -f busybox httpd daemonizes; cleanup kills it by PID with the namespace's other processes.
        httpd = ["ip", "netns", "exec", CONTAINER.namespace, "httpd", "-p", str(HTTP_PORT), "-h", WWW_DIRECTORY]
        guest.check(shlex.join(httpd))
        yield ContainerLab(guest_lab.host, guest, host_private_key, params)
    finally:
        run_in_guest(guest_lab, params, ScriptMode.TEARDOWN)
        guest.run(f"kill $(ip netns pids {CONTAINER.namespace}); ip netns del {CONTAINER.namespace}")
        guest.run(f"ip link del {CONTAINER.bridge}")


def set_up(lab: ContainerLab) -> SetupResult:
    exit_code, output = run_in_guest(lab, lab.params, ScriptMode.SETUP)
    result = outcome_from_output_untrusted(output, exit_code, nonce=LAB_NONCE)
    assert isinstance(result, SetupResult), output
    assert result.mode is VmMode.KERNEL
    return result


def guest_peer_routes(lab: KernelLab) -> list[str]:
    return peer_route_lines(lab.guest.check("ip -6 route show table all"))


def guest_traces(lab: KernelLab, markers: Sequence[str]) -> list[str]:
    """Route and rule lines in the guest that still name chip0 or a host tunnel address."""
    lines = [*lab.guest.check("ip -6 route show table all").splitlines(), *lab.guest.check("ip route").splitlines()]
    for save in SAVE_TOOLS:
        lines += [f"{save}: {line}" for line in lab.guest.check(save).splitlines() if line.startswith("-A ")]
    return [line for line in lines if any(marker in line for marker in markers)]


def test_the_host_reaches_a_container_by_its_ipv6_address_through_kernel_chip0(container_lab: ContainerLab) -> None:
    result = set_up(container_lab)
    assert result.ipv6
    routes = guest_peer_routes(container_lab)
    assert len(routes) == 1, routes
    assert "dev chip0 " in routes[0]
    vm_public_key = base64.b64encode(result.vm_public_key).decode()
    with dmnc_wg(
        container_lab.host, host_peer_config(container_lab.host_private_key, vm_public_key, HOST_PORT)
    ) as dmnc:
        route_container_subnets(container_lab.host, dmnc.interface)
        assert wait_for_ping(container_lab.host, CONTAINER_ADDRESS6, timeout=TUNNEL_TIMEOUT_SECONDS)
        assert fetch_page(container_lab.host, CONTAINER_ADDRESS6) == PAGE
        assert fetch_page(container_lab.host, CONTAINER_ADDRESS) == PAGE

        # Setup again with chip0 up (the kernel may now add the peer route itself): still one route, still working.
        again = set_up(container_lab)
        assert again.vm_public_key == result.vm_public_key
        assert len(guest_peer_routes(container_lab)) == 1, guest_peer_routes(container_lab)
        assert wait_for_ping(container_lab.host, CONTAINER_ADDRESS6, timeout=TUNNEL_TIMEOUT_SECONDS)


def test_teardown_removes_the_route_to_the_host_and_every_ipv6_rule(container_lab: ContainerLab) -> None:
    set_up(container_lab)
    assert len(guest_peer_routes(container_lab)) == 1
    assert any("fd33:33:33::1" in line for line in guest_traces(container_lab, ["fd33:33:33::1"]))
    exit_code, output = run_in_guest(container_lab, container_lab.params, ScriptMode.TEARDOWN)
    assert isinstance(outcome_from_output_untrusted(output, exit_code, nonce=LAB_NONCE), TeardownDone), output
    assert guest_peer_routes(container_lab) == []
    assert (
        guest_traces(
            container_lab, ["chip0", str(container_lab.params.host_address), str(container_lab.params.host_address6)]
        )
        == []
    )
    assert "DOCKER-USER" not in container_lab.guest.check("ip6tables-nft-save")


def test_a_guest_with_ipv6_disabled_keeps_the_ipv4_tunnel_to_the_container_working(container_lab: ContainerLab) -> None:
    try:
        container_lab.guest.check("sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        result = set_up(container_lab)
        assert result.ipv6 is False
        assert guest_peer_routes(container_lab) == []
        assert guest_traces(container_lab, ["fd33:33:33::1"]) == []
        vm_public_key = base64.b64encode(result.vm_public_key).decode()
        with dmnc_wg(
            container_lab.host, host_peer_config(container_lab.host_private_key, vm_public_key, HOST_PORT)
        ) as dmnc:
            route_container_subnets(container_lab.host, dmnc.interface)
            assert wait_for_ping(container_lab.host, CONTAINER_ADDRESS, timeout=TUNNEL_TIMEOUT_SECONDS)
            assert fetch_page(container_lab.host, CONTAINER_ADDRESS) == PAGE
    finally:
        container_lab.guest.check("sysctl -q -w net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0")
