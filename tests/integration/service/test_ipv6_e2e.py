"""IPv6 end to end through the real `dmnc` service (issue 12): a container on a dual-stack Docker network answers the
host by its IPv6 address as by its IPv4 one, and what dmnc adds for IPv6 in the VM goes with the IPv4 part.

The lab's VM side is the userspace fallback (wireguard-go container), see tests/lab/service_lab.py.
"""

from __future__ import annotations

import signal

import pytest

from tests.lab.service_lab import (
    ServiceLab,
    create_network,
    dmnc_routes,
    http_get,
    running_dmnc,
    start_web_container_dual_stack,
    status_json,
    vm_leftovers,
)

pytestmark = pytest.mark.lab

# The network of the report: `docker network create --subnet 172.31.31.0/24 --ipv6 --subnet fd77:31::/64`.
SUBNET4 = "172.31.31.0/24"
SUBNET6 = "fd77:31::/64"


def test_a_container_on_a_dual_stack_network_answers_by_its_ipv6_address_as_by_its_ipv4_one(
    service_lab: ServiceLab,
) -> None:
    create_network(service_lab, "e2e-dual", SUBNET4, SUBNET6)
    address4, address6 = start_web_container_dual_stack(service_lab, "e2e-dual")
    assert address6.startswith("fd77:31::"), address6
    with running_dmnc(service_lab) as dmnc:
        http_get(service_lab, address4)
        http_get(service_lab, address6)

        status = status_json(service_lab)
        assert status["vm"]["mode"] == "userspace"
        routed = {route["subnet"]: route for route in status["routes"]}
        for subnet in (SUBNET4, SUBNET6):
            assert routed[subnet]["installed"] is True, routed
            assert routed[subnet]["decision"] == "routed", routed
        assert dmnc.stop(signal.SIGTERM) == 0
    assert dmnc_routes(service_lab) == []
    assert vm_leftovers(service_lab) == []
    assert "Traceback" not in dmnc.log()
