"""macvlan containers end to end, through the real `dmnc` and a real dockerd (issue 15, part 1).

The lab's "VM" gets a parent link for macvlan networks: one end of a veth pair, both ends up, as a VM's NIC would
be. A network with `--aux-address dmnc=IP` gets a shim in the VM and its containers answer the host; one without a
reservation gets no shim, no host route, and a status line and doctor fix saying how to reserve one. When dmnc
stops, no shim link and no shim rule stays in the VM.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dmnc.vm.shims import SHIM_LINK_PREFIX
from tests.integration.doctor.test_doctor_lab import doctor
from tests.lab.netns import Netns, unique_suffix
from tests.lab.service_lab import (
    HOST_ADDRESS,
    VM_RULE_SAVERS,
    ServiceLab,
    dmnc_routes,
    http_get,
    running_dmnc,
    start_web_container,
    start_web_container_dual_stack,
    status_json,
    vm_leftovers,
)
from tests.lab.wait import wait_until

pytestmark = pytest.mark.lab

SUBNET = "192.168.77.0/24"
IP_RANGE = "192.168.77.192/27"
GATEWAY = "192.168.77.1"
SHIM_ADDRESS = "192.168.77.223"
UNRESERVED_SUBNET = "192.168.78.0/24"
SUBNET6, IP_RANGE6, GATEWAY6, SHIM_ADDRESS6 = "fd77:77::/64", "fd77:77::100/120", "fd77:77::1", "fd77:77::ff"
DECISION_TIMEOUT_S = 30.0
MACVLAN_NETWORKS = ("e2e-macvlan", "e2e-macvlan-unreserved")


@pytest.fixture
def parent(service_lab: ServiceLab) -> Iterator[str]:
    """A parent link for macvlan networks in the VM; removed with the macvlan networks and containers on it."""
    suffix = unique_suffix()
    name, peer = f"mvp{suffix}", f"mvq{suffix}"
    service_lab.vm.run(["ip", "link", "add", name, "type", "veth", "peer", "name", peer])
    service_lab.vm.run(["ip", "link", "set", peer, "up"])
    service_lab.vm.run(["ip", "link", "set", name, "up"])
    try:
        yield name
    finally:
        for container in service_lab.engine_request("GET", "/containers/json", params={"all": "1"}).json():
            if any(network_is_on(container, network) for network in MACVLAN_NETWORKS):
                service_lab.engine_request("DELETE", f"/containers/{container['Id']}", params={"force": "1"})
        for network in MACVLAN_NETWORKS:
            with contextlib.suppress(httpx.HTTPStatusError):  # this test did not create it
                service_lab.engine_request("DELETE", f"/networks/{network}")
        service_lab.vm.run(["ip", "link", "del", name], check=False)


def network_is_on(container: dict[str, Any], network: str) -> bool:
    return network in (container.get("NetworkSettings") or {}).get("Networks", {})


def create_macvlan_network(lab: ServiceLab, name: str, parent: str, config: dict[str, Any]) -> None:
    body = {"Name": name, "Driver": "macvlan", "Options": {"parent": parent}, "IPAM": {"Config": [config]}}
    lab.engine_request("POST", "/networks/create", json=body)


@contextlib.contextmanager
def ipv6_forwarding(vm: Netns) -> Iterator[None]:
    """IPv6 forwarding on in the VM, as Docker turns it on with its first IPv6 bridge network (this lab has none)."""
    vm.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])
    try:
        yield
    finally:
        vm.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=0"])


def pool(subnet: str, ip_range: str, gateway: str, reserved: str) -> dict[str, Any]:
    return {"Subnet": subnet, "IPRange": ip_range, "Gateway": gateway, "AuxiliaryAddresses": {"dmnc": reserved}}


def shim_traces(vm: Netns) -> list[str]:
    """Shim links and shim rules left in the VM."""
    links = [line for line in vm.run(["ip", "-o", "link", "show"]).stdout.splitlines() if SHIM_LINK_PREFIX in line]
    rules = [
        f"{save}: {line}"
        for save in VM_RULE_SAVERS
        for line in vm.run([save], check=False).stdout.splitlines()
        if "DMNC-FROM-SHIM" in line or SHIM_LINK_PREFIX in line
    ]
    return links + rules


def route_of(status: dict[str, Any], subnet: str) -> dict[str, Any]:
    return next((route for route in status["routes"] if route["subnet"] == subnet), {})


def test_the_host_reaches_a_macvlan_container_through_the_shim_of_its_aux_address(
    service_lab: ServiceLab, parent: str
) -> None:
    with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        dmnc.wait_for_log("VM side ready")
        # Created while dmnc runs: the network event brings a new setup run with the shim.
        create_macvlan_network(
            service_lab,
            "e2e-macvlan",
            parent,
            {"Subnet": SUBNET, "IPRange": IP_RANGE, "Gateway": GATEWAY, "AuxiliaryAddresses": {"dmnc": SHIM_ADDRESS}},
        )
        address = start_web_container(service_lab, "e2e-macvlan")
        http_get(service_lab, address)
        shims = service_lab.vm.run(["ip", "-o", "addr", "show"]).stdout
        assert f"{SHIM_ADDRESS}/32" in shims
        # The VM routes only the containers' range through the shim, not the subnet.
        vm_routes = service_lab.vm.run(["ip", "route", "show"]).stdout.splitlines()
        assert any(line.startswith(f"{IP_RANGE} dev {SHIM_LINK_PREFIX}") for line in vm_routes), vm_routes
        assert not any(line.startswith(f"{SUBNET} dev {SHIM_LINK_PREFIX}") for line in vm_routes), vm_routes
        assert route_of(status_json(service_lab), SUBNET)["decision"] == "routed"
        assert dmnc.stop(signal.SIGTERM) == 0
    assert dmnc_routes(service_lab) == []
    assert shim_traces(service_lab.vm) == []
    assert vm_leftovers(service_lab) == []
    assert "Traceback" not in dmnc.log()


def test_a_macvlan_network_without_a_reservation_gets_no_shim_and_a_clear_status_line(
    service_lab: ServiceLab, parent: str
) -> None:
    create_macvlan_network(service_lab, "e2e-macvlan-unreserved", parent, {"Subnet": UNRESERVED_SUBNET})
    with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        dmnc.wait_for_log("VM side ready")
        wait_until(
            lambda: route_of(status_json(service_lab), UNRESERVED_SUBNET).get("decision") == "no-shim",
            DECISION_TIMEOUT_S,
            f"status to give {UNRESERVED_SUBNET} the decision no-shim",
        )
        route = route_of(status_json(service_lab), UNRESERVED_SUBNET)
        assert route["installed"] is False
        assert "no address reserved for dmnc's shim" in route["reason"]
        assert "--aux-address dmnc=IP" in route["reason"]
        assert UNRESERVED_SUBNET not in service_lab.host.run(["ip", "route", "show"]).stdout
        assert shim_traces(service_lab.vm) == []
        report = json.loads(doctor(service_lab, "--json").stdout)
        (routes_check,) = [check for check in report["checks"] if check["name"] == "routes"]
        assert routes_check["verdict"] == "WARN", routes_check
        assert "--aux-address dmnc=IP" in routes_check["fix"]
        assert dmnc.stop(signal.SIGTERM) == 0
    assert vm_leftovers(service_lab) == []
    assert "Traceback" not in dmnc.log()


def test_the_host_reaches_a_dual_stack_macvlan_container_over_ipv6_through_the_shim_of_its_ipv6_aux_address(
    service_lab: ServiceLab, parent: str
) -> None:
    body = {
        "Name": "e2e-macvlan",
        "Driver": "macvlan",
        "EnableIPv6": True,
        "Options": {"parent": parent},
        "IPAM": {
            "Config": [
                pool(SUBNET, IP_RANGE, GATEWAY, SHIM_ADDRESS),
                pool(SUBNET6, IP_RANGE6, GATEWAY6, SHIM_ADDRESS6),
            ]
        },
    }
    service_lab.engine_request("POST", "/networks/create", json=body)
    _, address6 = start_web_container_dual_stack(service_lab, "e2e-macvlan")
    assert address6, "the container got no IPv6 address"
    with ipv6_forwarding(service_lab.vm), running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        dmnc.wait_for_log("VM side ready")
        http_get(service_lab, address6)
        assert f"{SHIM_ADDRESS6}/128" in service_lab.vm.run(["ip", "-o", "-6", "addr", "show"]).stdout
        vm_routes = service_lab.vm.run(["ip", "-6", "route", "show"]).stdout.splitlines()
        assert any(line.startswith(f"{IP_RANGE6} dev {SHIM_LINK_PREFIX}") for line in vm_routes), vm_routes
        assert route_of(status_json(service_lab), SUBNET6)["decision"] == "routed"
        assert dmnc.stop(signal.SIGTERM) == 0
    assert shim_traces(service_lab.vm) == []
    assert vm_leftovers(service_lab) == []
    assert "Traceback" not in dmnc.log()


def test_a_macvlan_network_on_the_hosts_own_lan_is_not_routed_and_doctor_says_it_is_reachable_directly(
    service_lab: ServiceLab, parent: str
) -> None:
    # The host's own LAN, as with Colima's bridged mode: the lab's host namespace sits on HOST_ADDRESS's subnet.
    lan = str(ipaddress.ip_interface(HOST_ADDRESS).network)
    create_macvlan_network(service_lab, "e2e-macvlan", parent, {"Subnet": lan})
    with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        dmnc.wait_for_log("VM side ready")
        wait_until(
            lambda: route_of(status_json(service_lab), lan).get("decision") == "on-host-lan",
            DECISION_TIMEOUT_S,
            f"status to give {lan} the decision on-host-lan",
        )
        assert not [line for line in dmnc_routes(service_lab) if line.startswith(lan)]
        report = json.loads(doctor(service_lab, "--json").stdout)
        checks = {check["name"]: check for check in report["checks"]}
        assert checks["route-conflicts"]["verdict"] == "PASS", checks["route-conflicts"]
        assert (
            f"network 'e2e-macvlan' subnet {lan} is reachable directly on your LAN"
            in (checks["route-conflicts"]["detail"])
        )
        assert f"{lan} (e2e-macvlan) is reachable directly on your LAN" in checks["routes"]["detail"]
        assert "not routed" not in checks["routes"]["detail"]
        assert dmnc.stop(signal.SIGTERM) == 0
    assert vm_leftovers(service_lab) == []
