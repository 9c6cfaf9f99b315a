"""The direct path end to end: the real `dmnc run --path auto` finds the lab's shared VM link, routes containers via
the VM's address there (no packet through the tunnel), falls back to the tunnel when that link goes away and
returns when it is back; `--path direct` without such a link says why in status; teardown removes the VM rules."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lab.service_lab import (
    DIRECT_VM_ADDRESS,
    ServiceLab,
    create_network,
    dmnc_routes,
    http_get,
    remove_direct_link,
    restore_direct_link,
    running_dmnc,
    start_web_container,
    start_web_container_dual_stack,
    status_json,
    vm_leftovers,
)
from tests.lab.wait import wait_until

pytestmark = pytest.mark.lab

DIRECT_VM_IP = DIRECT_VM_ADDRESS.split("/", maxsplit=1)[0]
# A fallback is due within seconds (dmnc.supervisor.path PROBE_FRESH_S plus a probe round); this bounds the wait
# on a loaded 2-core machine, it is not the figure under test.
PATH_CHANGE_TIMEOUT_S = 30.0


def ipv4_path(lab: ServiceLab) -> dict[str, Any]:
    paths: list[dict[str, Any]] = status_json(lab)["paths"]
    [ipv4] = [path for path in paths if path["family"] == "ipv4"]
    return ipv4


def kernel_route_to(lab: ServiceLab, address: str) -> str:
    """`ip route get ADDRESS` in the host namespace: the route the kernel uses."""
    return " ".join(lab.host.run(["ip", "route", "get", address]).stdout.split())


def test_auto_goes_direct_falls_back_to_the_tunnel_without_the_link_and_returns(service_lab: ServiceLab) -> None:
    container = start_web_container(service_lab)
    with running_dmnc(service_lab, "--path", "auto") as dmnc:
        http_get(service_lab, container)  # the service is up (by either path)
        wait_until(lambda: ipv4_path(service_lab)["path"] == "direct", PATH_CHANGE_TIMEOUT_S, "the direct path")
        direct = ipv4_path(service_lab)
        assert direct["next_hop"] == DIRECT_VM_IP
        assert direct["interface"] == service_lab.direct_interfaces[0]
        assert direct["problem"] is False
        wait_until(lambda: f"via {DIRECT_VM_IP}" in kernel_route_to(service_lab, container), 10, "the gateway route")
        assert f"dev {service_lab.direct_interfaces[0]}" in kernel_route_to(service_lab, container)
        http_get(service_lab, container)
        ipv6 = [path for path in status_json(service_lab)["paths"] if path["family"] == "ipv6"]
        assert ipv6[0]["path"] == "tunnel"  # the shared link has no IPv6: that family stays on the tunnel

        remove_direct_link(service_lab)
        wait_until(lambda: ipv4_path(service_lab)["path"] == "tunnel", PATH_CHANGE_TIMEOUT_S, "the fallback")
        assert "the host no longer has the address 10.205.0.1" in ipv4_path(service_lab)["reason"]
        assert " dev dmnc" in kernel_route_to(service_lab, container)
        http_get(service_lab, container)  # through the tunnel now

        restore_direct_link(service_lab)
        wait_until(lambda: ipv4_path(service_lab)["path"] == "direct", PATH_CHANGE_TIMEOUT_S, "the return")
        wait_until(lambda: f"via {DIRECT_VM_IP}" in kernel_route_to(service_lab, container), 10, "the gateway again")
        http_get(service_lab, container)

        assert dmnc.stop(signal.SIGTERM) == 0
    assert dmnc_routes(service_lab) == []
    assert not [line for line in service_lab.host.run(["ip", "route"]).stdout.splitlines() if "proto 220" in line]
    assert vm_leftovers(service_lab) == []
    assert "Traceback" not in dmnc.log()


def test_a_shared_link_that_holds_a_default_route_is_the_hosts_lan_and_stays_out(service_lab: ServiceLab) -> None:
    """A VM bridged onto the host's LAN shares a link with it, but so does everyone on that LAN: container traffic
    stays in the encrypted tunnel, and the VM is not asked to open its side to the host's address there."""
    container = start_web_container(service_lab)
    interface = service_lab.direct_interfaces[0]
    # A metric of its own, beside whatever default route the host namespace has; the gateway need not exist.
    uplink = ["default", "via", "10.205.0.254", "dev", interface, "metric", "4242"]
    with running_dmnc(service_lab, "--path", "auto") as dmnc:
        http_get(service_lab, container)
        wait_until(lambda: ipv4_path(service_lab)["path"] == "direct", PATH_CHANGE_TIMEOUT_S, "the direct path")
        assert "-s 10.205.0.1/32" in service_lab.vm.run(["iptables-save"]).stdout
        service_lab.host.run(["ip", "route", "add", *uplink])
        try:
            wait_until(lambda: ipv4_path(service_lab)["path"] == "tunnel", PATH_CHANGE_TIMEOUT_S, "the tunnel")
            assert f"{interface} holds the host's default route (its LAN)" in ipv4_path(service_lab)["reason"]
            assert " dev dmnc" in kernel_route_to(service_lab, container)
            http_get(service_lab, container)
            # The VM's rules for the host's address on that link go (those of the tunnel's own link stay).
            wait_until(
                lambda: "-s 10.205.0.1/32" not in service_lab.vm.run(["iptables-save"]).stdout,
                PATH_CHANGE_TIMEOUT_S,
                "the VM's rules for the link gone",
            )
        finally:
            service_lab.host.run(["ip", "route", "del", *uplink], check=False)
        wait_until(lambda: ipv4_path(service_lab)["path"] == "direct", PATH_CHANGE_TIMEOUT_S, "the return")
        http_get(service_lab, container)
        assert dmnc.stop(signal.SIGTERM) == 0
    assert vm_leftovers(service_lab) == []


def test_direct_without_a_shared_link_stays_on_the_tunnel_and_says_why(service_lab: ServiceLab) -> None:
    remove_direct_link(service_lab)
    container = start_web_container(service_lab)
    with running_dmnc(service_lab, "--path", "direct") as dmnc:
        http_get(service_lab, container)
        # The tunnel's own link is reported by the VM too (it reaches the host's address there without a gateway),
        # but the host has no connected subnet holding the VM's address on it: no direct path, and status says so.
        # Until the path keeper's next round after the VM setup, the reason is still that no link was reported.
        expected = "--path direct, but the VM address 10.204.0.2 is in no subnet connected to"
        wait_until(
            lambda: ipv4_path(service_lab)["reason"].startswith(expected), PATH_CHANGE_TIMEOUT_S, "the path's verdict"
        )
        path = ipv4_path(service_lab)
        assert path["path"] == "tunnel"
        assert path["problem"]
        assert path["reason"].endswith(": IPv4 stays on the tunnel")
        assert dmnc.stop(signal.SIGTERM) == 0


def test_the_tunnel_option_keeps_routes_on_the_tunnel_beside_a_shared_link(service_lab: ServiceLab) -> None:
    container = start_web_container(service_lab)
    with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        http_get(service_lab, container)
        assert ipv4_path(service_lab)["reason"] == "--path tunnel"
        assert " dev dmnc" in kernel_route_to(service_lab, container)
        saved = service_lab.vm.run(["iptables-save"]).stdout
        assert "DMNC-DIRECT" not in saved  # the VM was told of no host address: no direct rules
        assert dmnc.stop(signal.SIGTERM) == 0


DIRECT_HOST6, DIRECT_VM6 = "fd05::1", "fd05::2"


@contextlib.contextmanager
def ipv6_on_the_direct_link(lab: ServiceLab) -> Iterator[None]:
    """Both ends of the shared link get an IPv6 ULA too (a dual-stack host-only network), removed afterwards."""
    host_interface, vm_interface = lab.direct_interfaces
    lab.host.run(["ip", "addr", "add", f"{DIRECT_HOST6}/64", "dev", host_interface, "nodad"])
    lab.vm.run(["ip", "addr", "add", f"{DIRECT_VM6}/64", "dev", vm_interface, "nodad"])
    try:
        yield
    finally:
        lab.host.run(["ip", "addr", "del", f"{DIRECT_HOST6}/64", "dev", host_interface], check=False)
        lab.vm.run(["ip", "addr", "del", f"{DIRECT_VM6}/64", "dev", vm_interface], check=False)


def ipv6_direct(lab: ServiceLab) -> bool:
    return any(path["path"] == "direct" for path in status_json(lab)["paths"])


def test_each_family_goes_direct_on_a_dual_stack_link(service_lab: ServiceLab) -> None:
    create_network(service_lab, "direct-dual", "172.31.9.0/24", "fd77:9::/64")
    address4, address6 = start_web_container_dual_stack(service_lab, "direct-dual")
    with ipv6_on_the_direct_link(service_lab), running_dmnc(service_lab, "--path", "auto") as dmnc:
        http_get(service_lab, address4)

        def both_direct() -> bool:
            return {path["family"]: path["path"] for path in status_json(service_lab)["paths"]} == {
                "ipv4": "direct",
                "ipv6": "direct",
            }

        wait_until(both_direct, PATH_CHANGE_TIMEOUT_S, "both families direct")
        wait_until(lambda: f"via {DIRECT_VM6}" in kernel_route_to(service_lab, address6), 10, "the IPv6 gateway")
        http_get(service_lab, address6)
        http_get(service_lab, address4)

        remove_direct_link(service_lab)  # its IPv6 address goes with it; restored (IPv4 only) by the lab's reset
        wait_until(lambda: not ipv6_direct(service_lab), PATH_CHANGE_TIMEOUT_S, "both families back on the tunnel")
        http_get(service_lab, address6)
        assert " dev dmnc" in kernel_route_to(service_lab, address6)
        assert dmnc.stop(signal.SIGTERM) == 0
    print(dmnc.log())
    assert vm_leftovers(service_lab) == []


def test_sighup_applies_a_changed_path_and_the_vm_side_follows(service_lab: ServiceLab) -> None:
    container = start_web_container(service_lab)
    service_lab.config_file.write_text('path = "tunnel"\n', encoding="utf-8")
    with running_dmnc(service_lab) as dmnc:
        http_get(service_lab, container)
        wait_until(lambda: ipv4_path(service_lab)["reason"] == "--path tunnel", 10, "the tunnel by configuration")
        assert "DMNC-DIRECT" not in service_lab.vm.run(["iptables-save"]).stdout

        service_lab.config_file.write_text('path = "auto"\n', encoding="utf-8")
        dmnc.process.send_signal(signal.SIGHUP)
        # The VM side is set up again, now told the host's addresses, and opens the shared link: then direct.
        wait_until(lambda: ipv4_path(service_lab)["path"] == "direct", PATH_CHANGE_TIMEOUT_S, "direct after SIGHUP")
        wait_until(lambda: f"via {DIRECT_VM_IP}" in kernel_route_to(service_lab, container), 10, "the gateway route")
        http_get(service_lab, container)

        service_lab.config_file.write_text('path = "tunnel"\n', encoding="utf-8")
        dmnc.process.send_signal(signal.SIGHUP)
        wait_until(lambda: ipv4_path(service_lab)["reason"] == "--path tunnel", PATH_CHANGE_TIMEOUT_S, "tunnel again")
        wait_until(
            lambda: "DMNC-DIRECT" not in service_lab.vm.run(["iptables-save"]).stdout,
            PATH_CHANGE_TIMEOUT_S,
            "the VM's direct rules removed",
        )
        assert " dev dmnc" in kernel_route_to(service_lab, container)
        http_get(service_lab, container)
        assert dmnc.stop(signal.SIGTERM) == 0
    assert vm_leftovers(service_lab) == []
