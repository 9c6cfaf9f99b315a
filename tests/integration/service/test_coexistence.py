"""dmnc beside a stand-in for docker-mac-net-connect, through the real `dmnc` command (Linux lab).

The stand-in holds what that tool holds on a Mac: a host interface with `10.33.33.1 peer 10.33.33.2`, and a VM
interface `chip0` with `.2` that carries no dmnc mark. In the foreground dmnc refuses with one line and touches
nothing in the VM; as a service it waits in standby, says why in `dmnc status`, and takes over once the stand-in is
gone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.integration.doctor.test_doctor_lab import doctor, lines_by_check
from tests.lab.netns import Netns
from tests.lab.service_lab import (
    EXIT_TIMEOUT_S,
    ServiceLab,
    http_get,
    running_dmnc,
    start_web_container,
    status_json,
)
from tests.lab.wait import wait_until

pytestmark = pytest.mark.lab

HOST_STAND_IN = "dmncstandin"
VM_INTERFACE = "chip0"
# What systemd puts in a unit's environment (systemd.exec(5)): dmnc then runs as a service.
AS_A_SERVICE = {"INVOCATION_ID": "5f3c0e9b2d7a4c18a6e1f0b9c8d7e6a5"}
# dmnc checks the host again every 15 s and the VM every 30 s (STANDBY_RECHECK_S, VM_STANDBY_RECHECK_S), plus a
# setup container run and the lab's load.
HOST_TAKEOVER_TIMEOUT_S = 60.0
VM_TAKEOVER_TIMEOUT_S = 90.0


def add_point_to_point(namespace: Netns, interface: str, local: str, peer: str) -> None:
    """A persistent TUN (ip-tuntap(8)) holding `local peer PEER`, up."""
    namespace.run(["ip", "tuntap", "add", "dev", interface, "mode", "tun"])
    namespace.run(["ip", "addr", "add", local, "peer", peer, "dev", interface])
    namespace.run(["ip", "link", "set", interface, "up"])


@contextlib.contextmanager
def stand_in(lab: ServiceLab) -> Iterator[None]:
    """docker-mac-net-connect's footprint in the lab; removed at the end whatever happened."""
    add_point_to_point(lab.host, HOST_STAND_IN, "10.33.33.1", "10.33.33.2")
    add_point_to_point(lab.vm, VM_INTERFACE, "10.33.33.2", "10.33.33.1")
    try:
        yield
    finally:
        lab.host.run(["ip", "link", "del", HOST_STAND_IN], check=False)
        lab.vm.run(["ip", "link", "del", VM_INTERFACE], check=False)


def containers(lab: ServiceLab) -> set[str]:
    return {container["Id"] for container in lab.engine_request("GET", "/containers/json", params={"all": "1"}).json()}


def vm_interface_state(lab: ServiceLab) -> str:
    return lab.vm.run(["ip", "-d", "addr", "show", "dev", VM_INTERFACE]).stdout


def test_in_the_foreground_dmnc_refuses_with_one_line_and_leaves_the_vm_alone(service_lab: ServiceLab) -> None:
    with stand_in(service_lab):
        before = vm_interface_state(service_lab)
        containers_before = containers(service_lab)
        with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
            assert dmnc.process.wait(timeout=EXIT_TIMEOUT_S * 3) == 1
            lines = [line for line in dmnc.log().splitlines() if line.strip()]
        refusals = [line for line in lines if line.startswith("dmnc: ")]
        assert refusals == [lines[-1]]
        assert "10.33.33.1" in lines[-1]
        assert "sudo brew services stop docker-mac-net-connect" in lines[-1]
        assert "Traceback" not in dmnc.log()
        assert vm_interface_state(service_lab) == before
        assert containers(service_lab) == containers_before  # no setup container ran in the VM


def test_as_a_service_dmnc_waits_in_standby_says_why_and_takes_over_once_the_stand_in_is_gone(
    service_lab: ServiceLab,
) -> None:
    address = start_web_container(service_lab)
    with stand_in(service_lab), running_dmnc(service_lab, "--path", "tunnel", env=AS_A_SERVICE) as dmnc:
        dmnc.wait_for_log("standby: another interface already holds the tunnel address 10.33.33.1")
        standby = status_json(service_lab)["standby"]
        assert "10.33.33.1" in standby
        assert "sudo brew services stop docker-mac-net-connect" in standby

        # The host side of the stand-in goes: dmnc starts its tunnel, then finds the VM's chip0 not its own.
        before = vm_interface_state(service_lab)
        service_lab.host.run(["ip", "link", "del", HOST_STAND_IN])
        dmnc.wait_for_log("the conflict is gone: dmnc takes over", timeout=HOST_TAKEOVER_TIMEOUT_S)
        dmnc.wait_for_log("chip0 that is not dmnc's", timeout=HOST_TAKEOVER_TIMEOUT_S)
        assert "chip0 that is not dmnc's" in status_json(service_lab)["standby"]
        assert vm_interface_state(service_lab) == before

        # The VM side goes too: the next check sets dmnc's own chip0 up and containers answer.
        service_lab.vm.run(["ip", "link", "del", VM_INTERFACE])
        dmnc.wait_for_log("the VM interface is free again: dmnc takes over", timeout=VM_TAKEOVER_TIMEOUT_S)
        http_get(service_lab, address)
        wait_until(lambda: status_json(service_lab)["standby"] is None, 10, "status without standby")
        assert dmnc.log().count("standby: another interface already holds") == 1  # reported once, not per check
        assert dmnc.stop() == 0
    assert "Traceback" not in dmnc.log()


def test_doctor_names_both_sides_of_the_stand_in_and_touches_nothing(service_lab: ServiceLab) -> None:
    with stand_in(service_lab):
        before = vm_interface_state(service_lab)
        completed = doctor(service_lab)
        coexistence = lines_by_check(completed.stdout)["coexistence"]
        assert coexistence.startswith(
            f"FAIL coexistence: interface {HOST_STAND_IN} already holds the tunnel address 10.33.33.1: "
        )
        assert "\n  fix: stop that program first (sudo brew services stop docker-mac-net-connect" in coexistence
        vm_interface = lines_by_check(completed.stdout)["vm-wireguard"]
        assert vm_interface.startswith(f"FAIL vm-wireguard: the VM already has an interface {VM_INTERFACE} that is")
        assert completed.returncode == 1
        assert vm_interface_state(service_lab) == before
