"""A stand-in container behind a bridge in the "VM", and dmnc's host peer routing to it, for the IPv6 lab tests.

The VM side is built from plain `ip`/`sysctl` argv lists, so the same commands serve a lab namespace (run with
`Netns.run`) and the qemu guest (run with `QemuGuest.check`). The network is dual-stack as a Docker network created
with `--subnet 172.31.31.0/24 --ipv6 --subnet fd77:31::/64`: the bridge holds the gateway addresses, the container
namespace the `.2` addresses and default routes through the bridge.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dmnc.vm.params import DEFAULT_HOST_ADDRESS, DEFAULT_HOST_ADDRESS6, DEFAULT_VM_ADDRESS, DEFAULT_VM_ADDRESS6
from tests.integration.tunnel.peers import DmncPeer, render_dmnc_config
from tests.lab.netns import Netns

CONTAINER_SUBNET = ipaddress.IPv4Network("172.31.31.0/24")
CONTAINER_SUBNET6 = ipaddress.IPv6Network("fd77:31::/64")
BRIDGE_ADDRESS = "172.31.31.1"
BRIDGE_ADDRESS6 = "fd77:31::1"
CONTAINER_ADDRESS = "172.31.31.2"
CONTAINER_ADDRESS6 = "fd77:31::2"
HTTP_PORT = 8080
PAGE = "dmnc-ipv6-lab-page"
# What dmnc's host peer allows from the VM: its tunnel addresses and the container subnets it routes.
VM_ALLOWED_IPS = (
    f"{DEFAULT_VM_ADDRESS}/32",
    f"{DEFAULT_VM_ADDRESS6}/128",
    str(CONTAINER_SUBNET),
    str(CONTAINER_SUBNET6),
)
HOST_TUNNEL_ADDRESSES = f"{DEFAULT_HOST_ADDRESS}/32, {DEFAULT_HOST_ADDRESS6}/128"
FETCH_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class ContainerNames:
    """Interface and namespace names of one stand-in container (unique per run: namespace names are global)."""

    namespace: str
    bridge: str
    vm_veth: str
    container_veth: str


def container_network_commands(names: ContainerNames) -> list[list[str]]:
    """argv lists that, run in the VM after `names.namespace` exists, wire the container behind the bridge."""
    in_container = ["ip", "netns", "exec", names.namespace]
    prefix6 = CONTAINER_SUBNET6.prefixlen
    prefix4 = CONTAINER_SUBNET.prefixlen
    return [
        ["ip", "link", "add", names.vm_veth, "type", "veth", "peer", "name", names.container_veth],
        ["ip", "link", "set", names.container_veth, "netns", names.namespace],
        ["ip", "link", "add", names.bridge, "type", "bridge"],
        ["ip", "addr", "add", f"{BRIDGE_ADDRESS}/{prefix4}", "dev", names.bridge],
        # nodad: duplicate address detection would hold the address back for a second or more.
        ["ip", "addr", "add", f"{BRIDGE_ADDRESS6}/{prefix6}", "dev", names.bridge, "nodad"],
        ["ip", "link", "set", names.bridge, "up"],
        ["ip", "link", "set", names.vm_veth, "master", names.bridge, "up"],
        [*in_container, "ip", "link", "set", "lo", "up"],
        [*in_container, "ip", "addr", "add", f"{CONTAINER_ADDRESS}/{prefix4}", "dev", names.container_veth],
        [*in_container, "ip", "addr", "add", f"{CONTAINER_ADDRESS6}/{prefix6}", "dev", names.container_veth, "nodad"],
        [*in_container, "ip", "link", "set", names.container_veth, "up"],
        [*in_container, "ip", "route", "add", "default", "via", BRIDGE_ADDRESS],
        [*in_container, "ip", "-6", "route", "add", "default", "via", BRIDGE_ADDRESS6],
        # dockerd turns forwarding on for its bridges (IPv6 too when a network has --ipv6); setup.sh relies on it.
        ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        ["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"],
    ]


def build_container_network(run_in_vm: Callable[[Sequence[str]], object], names: ContainerNames) -> None:
    for argv in container_network_commands(names):
        run_in_vm(argv)


def host_peer_config(host_private_key: str, vm_public_key: str, port: int) -> str:
    """`dmnc wg up` config for the host end: the host's tunnel addresses and the VM as its one peer."""
    return render_dmnc_config(host_private_key, HOST_TUNNEL_ADDRESSES, port, [DmncPeer(vm_public_key, VM_ALLOWED_IPS)])


def route_container_subnets(host: Netns, interface: str) -> None:
    """What dmnc's route keeper does for the network: one host route per container subnet, into the tunnel."""
    host.run(["ip", "route", "replace", str(CONTAINER_SUBNET), "dev", interface])
    host.run(["ip", "-6", "route", "replace", str(CONTAINER_SUBNET6), "dev", interface])


def fetch_page(host: Netns, address: str, *, port: int = HTTP_PORT, timeout: float = FETCH_TIMEOUT_SECONDS) -> str:
    """GET / from the HTTP server at `address` (the container's, unless `port` names another) from the namespace
    `host`; the body, or curl's error."""
    host_part = f"[{address}]" if ":" in address else address
    completed = host.run(
        ["curl", "-sS", "-g", "--max-time", str(timeout), f"http://{host_part}:{port}/"],
        check=False,
        timeout=timeout + 5,
    )
    return completed.stdout.strip() if completed.returncode == 0 else f"curl failed: {completed.stderr.strip()}"


def peer_route_lines(ip_route_output: str, host_address6: str = str(DEFAULT_HOST_ADDRESS6)) -> list[str]:
    """The lines of `ip -6 route` output whose destination is the host's IPv6 tunnel address."""
    return [
        line
        for line in ip_route_output.splitlines()
        if line.split(" ", 1)[0] in (host_address6, f"{host_address6}/128")
    ]
