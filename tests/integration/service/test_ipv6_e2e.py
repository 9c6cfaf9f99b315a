"""IPv6 end to end through the real `dmnc` service (issue 12): a container on a dual-stack Docker network answers the
host by its IPv6 address as by its IPv4 one, and what dmnc adds for IPv6 in the VM (the route to the host's tunnel
address, the ip6tables rules) goes with the IPv4 part, on dmnc's stop and on `dmnc uninstall` after a crash.

The lab's VM side is the userspace fallback (wireguard-go container), see tests/lab/service_lab.py.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dmnc.vm.params import DEFAULT_HOST_ADDRESS6
from tests.conftest import dmnc_command
from tests.integration.doctor.test_doctor_lab import doctor
from tests.integration.service.test_uninstall import uninstall
from tests.lab.netns import Netns, stop_process
from tests.lab.service_lab import (
    VM_ADDRESS,
    ServiceLab,
    create_network,
    dmnc_routes,
    http_get,
    running_dmnc,
    start_web_container_dual_stack,
    status_json,
    vm_leftovers,
)
from tests.lab.setup_image import import_setup_image
from tests.lab.wait import wait_until

pytestmark = pytest.mark.lab

# The network of the report: `docker network create --subnet 172.31.31.0/24 --ipv6 --subnet fd77:31::/64`.
SUBNET4 = "172.31.31.0/24"
SUBNET6 = "fd77:31::/64"
# dmnc passes the VM's `ipv6=off` to the route policy within one host-state check (ENDPOINT_CHECK_SECONDS, 2 s) of
# the VM side being ready; until then it adds no IPv6 route (decision vm-ipv6-unknown). The bound is for a loaded
# machine.
DECISION_TIMEOUT_S = 30.0
# A route only this test adds and deletes, so it knows the route monitor is listening once the monitor reports it.
MONITOR_MARKER = "198.51.100.0/24"
IPV6_SCOPES = ("all", "default")
IPV6_RULE_SAVERS = ("ip6tables-nft-save", "ip6tables-legacy-save")
UNINSTALL_SETUP_TAG = "dmnc-setup:ipv6-uninstall-test"


def vm_ipv6_traces(lab: ServiceLab) -> list[str]:
    """dmnc's IPv6 state in the VM: routes (every table) and ip6tables rules naming chip0 or the host's IPv6 tunnel
    address."""
    markers = ("chip0", str(DEFAULT_HOST_ADDRESS6))
    routes = lab.vm.run(["ip", "-6", "route", "show", "table", "all"]).stdout.splitlines()
    found = [f"ip -6 route: {line}" for line in routes if any(marker in line for marker in markers)]
    for save in IPV6_RULE_SAVERS:
        rules = lab.vm.run([save], check=False).stdout.splitlines()
        found += [f"{save}: {line}" for line in rules if line.startswith("-A ") and any(m in line for m in markers)]
    return found


@contextlib.contextmanager
def ipv6_disabled(vm: Netns) -> Iterator[None]:
    """IPv6 off in the VM namespace (ipv6(7)'s disable_ipv6, as a VM booted with it off), back on afterwards: the
    lab is shared by the module's tests."""
    for scope in IPV6_SCOPES:
        vm.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{scope}.disable_ipv6=1"])
    try:
        yield
    finally:
        for scope in IPV6_SCOPES:
            vm.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{scope}.disable_ipv6=0"])


def test_a_container_on_a_dual_stack_network_answers_by_its_ipv6_address_as_by_its_ipv4_one(
    service_lab: ServiceLab,
) -> None:
    create_network(service_lab, "e2e-dual", SUBNET4, SUBNET6)
    address4, address6 = start_web_container_dual_stack(service_lab, "e2e-dual")
    assert address6.startswith("fd77:31::"), address6
    with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        http_get(service_lab, address4)
        http_get(service_lab, address6)

        status = status_json(service_lab)
        assert status["vm"]["mode"] == "userspace"
        routed = {route["subnet"]: route for route in status["routes"]}
        for subnet in (SUBNET4, SUBNET6):
            assert routed[subnet]["installed"] is True, routed
            assert routed[subnet]["decision"] == "routed", routed
        assert_vm_has_ipv6_route_and_rules(service_lab)
        assert dmnc.stop(signal.SIGTERM) == 0
    assert dmnc_routes(service_lab) == []
    assert SUBNET6 not in service_lab.host.run(["ip", "-6", "route", "show", "table", "main"]).stdout
    assert vm_ipv6_traces(service_lab) == []
    assert vm_leftovers(service_lab) == []
    assert "Traceback" not in dmnc.log()


def assert_vm_has_ipv6_route_and_rules(lab: ServiceLab) -> None:
    """What the removal must take away is there: the route back to the host's IPv6 tunnel address, the masquerade."""
    traces = vm_ipv6_traces(lab)
    assert any(line.startswith(f"ip -6 route: {DEFAULT_HOST_ADDRESS6} ") for line in traces), traces
    assert any("MASQUERADE" in line for line in traces), traces


def test_uninstall_after_a_crash_removes_the_ipv6_route_and_rules_in_the_vm_like_the_ipv4_ones(
    service_lab: ServiceLab,
) -> None:
    # `dmnc uninstall` finds the VM side by dmnc's setup images (dmnc-setup:*): the lab's, under such a tag.
    import_setup_image(service_lab.engine.socket_path, UNINSTALL_SETUP_TAG)
    create_network(service_lab, "e2e-dual", SUBNET4, SUBNET6)
    _address4, address6 = start_web_container_dual_stack(service_lab, "e2e-dual")
    with running_dmnc(service_lab, "--path", "tunnel", "--setup-image", UNINSTALL_SETUP_TAG) as dmnc:
        http_get(service_lab, address6)
        dmnc.kill()  # no teardown: the VM side stays, as after a crash or power loss
    assert_vm_has_ipv6_route_and_rules(service_lab)

    result = uninstall(service_lab, service_lab.workdir / "root")

    assert result.returncode == 0, result.stderr
    assert "VM side: removed chip0" in result.stdout
    assert vm_ipv6_traces(service_lab) == []
    assert vm_leftovers(service_lab) == []


@contextlib.contextmanager
def route_monitor(lab: ServiceLab) -> Iterator[Callable[[], str]]:
    """`ip monitor route` in the host namespace, listening before this yields; yields a reader of what it has
    reported so far."""
    output = lab.workdir / "route-monitor.log"
    with output.open("wb") as sink:
        monitor = lab.host.popen(["ip", "-o", "monitor", "route"], stdout=sink, stderr=subprocess.STDOUT)
    gateway = VM_ADDRESS.split("/", maxsplit=1)[0]

    def marker_reported() -> bool:
        # Added and deleted each time: a route added before the monitor subscribed is reported by the next round.
        lab.host.run(["ip", "route", "add", MONITOR_MARKER, "via", gateway])
        lab.host.run(["ip", "route", "del", MONITOR_MARKER])
        return MONITOR_MARKER in output.read_text()

    try:
        wait_until(marker_reported, 10.0, "the route monitor to report a route")
        yield output.read_text
    finally:
        stop_process(monitor)
        lab.host.processes.remove(monitor)


def route_of(status: dict[str, Any], subnet: str) -> dict[str, Any] | None:
    return next((route for route in status["routes"] if route["subnet"] == subnet), None)


def test_a_vm_with_ipv6_disabled_keeps_ipv4_and_status_and_doctor_say_why_ipv6_is_not_routed(
    service_lab: ServiceLab,
) -> None:
    create_network(service_lab, "e2e-dual", SUBNET4, SUBNET6)
    address4, _address6 = start_web_container_dual_stack(service_lab, "e2e-dual")
    with (
        ipv6_disabled(service_lab.vm),
        route_monitor(service_lab) as monitored,
        running_dmnc(service_lab, "--path", "tunnel") as dmnc,
    ):
        http_get(service_lab, address4)
        dmnc.wait_for_log("IPv4 only: the VM has IPv6 disabled")
        wait_until(
            lambda: (route_of(status_json(service_lab), SUBNET6) or {}).get("decision") == "vm-no-ipv6",
            DECISION_TIMEOUT_S,
            f"status to give {SUBNET6} the decision vm-no-ipv6",
        )
        status = status_json(service_lab)
        assert route_of(status, SUBNET4) == {
            "subnet": SUBNET4, "network": "e2e-dual", "installed": True, "reason": None, "decision": "routed",
        }  # fmt: skip
        ipv6_route = route_of(status, SUBNET6)
        assert ipv6_route is not None
        assert ipv6_route["installed"] is False
        assert ipv6_route["reason"].startswith("the Docker VM has IPv6 disabled: the tunnel carries IPv4 only")
        # Nothing could answer, so there is no host route into the tunnel for it, and there never was one: dmnc
        # waited for the VM's answer before adding any IPv6 route.
        assert SUBNET6 not in service_lab.host.run(["ip", "-6", "route", "show", "table", "main"]).stdout
        assert SUBNET6 not in monitored()
        assert SUBNET4 in monitored()

        text = service_lab.host.run(
            [*dmnc_command(), "status", "--control-socket", str(service_lab.control_socket)]
        ).stdout
        assert any(SUBNET6 in line and "[vm-no-ipv6]" in line for line in text.splitlines()), text

        report = json.loads(doctor(service_lab, "--json").stdout)
        (routes_check,) = [check for check in report["checks"] if check["name"] == "routes"]
        assert routes_check["verdict"] == "WARN", routes_check
        assert f"not routed: {SUBNET6} (e2e-dual): the Docker VM has IPv6 disabled" in routes_check["detail"]
        assert "enable IPv6 in the VM" in routes_check["fix"]
        assert dmnc.stop(signal.SIGTERM) == 0
    assert dmnc_routes(service_lab) == []
    assert vm_leftovers(service_lab) == []
    assert "Traceback" not in dmnc.log()
