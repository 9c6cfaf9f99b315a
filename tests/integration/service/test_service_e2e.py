"""The real `dmnc` command end to end: containers reached by IP from the host, recovery, clean stop.

Times printed here (start to first answer, recovery) are for reading in the test log, never asserted.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import dmnc_command
from tests.lab.service_lab import (
    ServiceLab,
    create_network,
    dmnc_routes,
    http_get,
    restart_dockerd,
    running_dmnc,
    start_web_container,
    status_json,
    vm_leftovers,
)
from tests.lab.wait import wait_until

pytestmark = pytest.mark.lab


def test_containers_answer_by_ip_status_reports_them_and_sigterm_cleans_up(service_lab: ServiceLab) -> None:
    default_bridge_address = start_web_container(service_lab)
    with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        http_get(service_lab, default_bridge_address)
        print(f"start to first HTTP answer through dmnc: {time.monotonic() - dmnc.started_at:.1f} s")

        with following_events(service_lab) as followed:
            create_network(service_lab, "e2e-web", "172.31.7.0/24")
            web_address = start_web_container(service_lab, "e2e-web")
            http_get(service_lab, web_address)
            wait_until(lambda: any("network e2e-web created" in line for line in followed), 20, "event followed")

        status = status_json(service_lab)
        assert status["docker"]["connected"] is True
        assert status["vm"]["mode"] == "userspace"
        assert status["tunnel"]["interface"].startswith("dmnc")
        assert status["tunnel"]["rx_bytes"] > 0
        assert status["tunnel"]["last_handshake_age_s"] is not None
        routed = {route["subnet"]: route for route in status["routes"]}
        assert routed["172.31.7.0/24"] == {
            "subnet": "172.31.7.0/24",
            "network": "e2e-web",
            "installed": True,
            "reason": None,
            "decision": "routed",
        }
        assert routed["172.17.0.0/16"]["installed"] is True

        assert dmnc.stop(signal.SIGTERM) == 0
    assert dmnc_routes(service_lab) == []
    assert vm_leftovers(service_lab) == []
    assert "VM side removed" in dmnc.log()
    assert "Traceback" not in dmnc.log()


def test_dockerd_killed_and_restarted_is_followed_and_new_networks_are_routed(own_service_lab: ServiceLab) -> None:
    address = start_web_container(own_service_lab)
    with running_dmnc(own_service_lab, "--path", "tunnel") as dmnc:
        http_get(own_service_lab, address)
        killed_at = time.monotonic()
        restart_dockerd(own_service_lab)
        # Created before dmnc is back: the resync on reconnect must pick it up, not the event stream.
        create_network(own_service_lab, "after-restart", "172.31.9.0/24")
        web_address = start_web_container(own_service_lab, "after-restart")
        http_get(own_service_lab, web_address)
        print(f"dockerd killed -> container on a new network answering: {time.monotonic() - killed_at:.1f} s")
        dmnc.wait_for_log("reconnecting (routes stay)")
        assert status_json(own_service_lab)["docker"]["connected"] is True
        assert dmnc.stop() == 0
    assert "Traceback" not in dmnc.log()


def test_vm_interface_deleted_behind_dmncs_back_is_set_up_again(service_lab: ServiceLab) -> None:
    address = start_web_container(service_lab)
    with running_dmnc(service_lab, "--path", "tunnel", env={"DMNC_VM_STALE_AFTER": "4"}) as dmnc:
        http_get(service_lab, address)
        service_lab.vm.run(["ip", "link", "delete", "chip0"])
        dmnc.wait_for_log("setting it up again", timeout=60)
        seconds = http_get(service_lab, address)
        print(f"reachable again {seconds:.1f} s after the VM side was declared stale")
        assert dmnc.stop() == 0


def test_sigkill_leaves_state_that_a_new_dmnc_takes_over(service_lab: ServiceLab) -> None:
    address = start_web_container(service_lab)
    with running_dmnc(service_lab, "--path", "tunnel") as first:
        http_get(service_lab, address)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
    assert dmnc_routes(service_lab) == []  # they died with the TUN
    with running_dmnc(service_lab, "--path", "tunnel") as second:
        http_get(service_lab, address)
        assert second.stop() == 0
    assert vm_leftovers(service_lab) == []


def run_second_dmnc(lab: ServiceLab, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [*dmnc_command(), "run", "--path", "tunnel", "--config", str(lab.config_file), *arguments]
    return lab.host.run(command, check=False, timeout=60)


def test_a_second_dmnc_is_refused_with_a_clear_message(service_lab: ServiceLab) -> None:
    with running_dmnc(service_lab, "--path", "tunnel", "--listen", "0.0.0.0:3399") as first:
        first.wait_for_log("dmnc 0.1.0 running")
        same_socket = run_second_dmnc(service_lab, "--control-socket", str(service_lab.control_socket))
        assert same_socket.returncode == 1
        assert "dmnc: another dmnc is already running" in same_socket.stderr
        busy_port = run_second_dmnc(
            service_lab, "--listen", "0.0.0.0:3399", "--control-socket", str(service_lab.workdir / "second.sock")
        )
        # A second dmnc with a socket of its own finds the first one's tunnel address taken before it tries the port
        # (dmnc.supervisor.conflicts); the busy explicit port alone is unit-tested (tests/unit/supervisor).
        assert busy_port.returncode == 1
        assert "another interface already holds the tunnel address 10.33.33.1: another dmnc" in busy_port.stderr
        for result in (same_socket, busy_port):
            assert "Traceback" not in result.stderr
        assert first.stop() == 0


def test_unreachable_docker_is_named_and_retried_while_the_tunnel_stays_up(service_lab: ServiceLab) -> None:
    missing = service_lab.workdir / "no-docker.sock"
    with running_dmnc(service_lab, "--path", "tunnel", "--docker-host", f"unix://{missing}") as dmnc:
        dmnc.wait_for_log("Docker is not reachable: ")
        dmnc.wait_for_log(str(missing))
        status = status_json(service_lab)
        assert status["docker"]["connected"] is False
        assert status["tunnel"]["interface"].startswith("dmnc")
        assert dmnc.stop() == 0


def test_default_port_taken_falls_back_to_a_free_one_and_still_works(service_lab: ServiceLab) -> None:
    address = start_web_container(service_lab)
    squatter = service_lab.host.popen(["nc", "-u", "-l", "-p", "3333"], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: ":3333 " in service_lab.host.run(["ss", "-uln"]).stdout, 5, "nc listening on UDP 3333")
        with running_dmnc(service_lab, "--path", "tunnel", "--listen", "0.0.0.0") as dmnc:
            dmnc.wait_for_log("UDP port 3333 is in use; listening on")
            http_get(service_lab, address)
            assert status_json(service_lab)["tunnel"]["listen"] != "0.0.0.0:3333"
            assert dmnc.stop() == 0
    finally:
        squatter.kill()
        squatter.wait()


@contextlib.contextmanager
def following_events(lab: ServiceLab) -> Iterator[list[str]]:
    """`dmnc status --follow` running, its lines collected; yields once it demonstrably receives events."""
    follower = lab.host.popen(
        [*dmnc_command(), "status", "--follow", "--control-socket", str(lab.control_socket)],
        stdout=subprocess.PIPE,
    )
    lines: list[str] = []

    def collect() -> None:
        assert follower.stdout is not None
        for raw in follower.stdout:
            lines.append(raw.decode(errors="replace"))

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        # The feed carries only what happens after the follower subscribed: make something happen until it shows.
        attempts = itertools.count()

        def probe_event_shown() -> bool:
            if any("e2e-probe" in line for line in lines):
                return True
            attempt = next(attempts)
            network_id = create_network(lab, f"e2e-probe-{attempt}", f"172.31.{100 + attempt % 100}.0/24")
            lab.engine_request("DELETE", f"/networks/{network_id}")
            return False

        wait_until(probe_event_shown, 15, "`dmnc status --follow` to show a network event", interval=0.5)
        yield lines
    finally:
        follower.kill()
        follower.wait()
        reader.join(timeout=5)


def test_sighup_reloads_route_selection_from_the_config_file(service_lab: ServiceLab) -> None:
    address = start_web_container(service_lab)
    with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        http_get(service_lab, address)
        assert any(line.startswith("172.17.0.0/16 ") for line in dmnc_routes(service_lab))
        service_lab.config_file.write_text('[routes]\nexclude = ["172.17.0.0/16"]\n', encoding="utf-8")
        dmnc.process.send_signal(signal.SIGHUP)
        dmnc.wait_for_log("configuration reloaded")
        wait_until(lambda: not any("172.17.0.0/16" in line for line in dmnc_routes(service_lab)), 10, "route withdrawn")
        excluded = [route for route in status_json(service_lab)["routes"] if route["subnet"] == "172.17.0.0/16"]
        assert excluded == [
            {
                "subnet": "172.17.0.0/16",
                "network": "bridge",
                "installed": False,
                "reason": "matches an exclude pattern; remove the matching --route-exclude",
                "decision": "excluded",
            }
        ]
        assert dmnc.stop() == 0


def test_a_second_stop_signal_exits_at_once(service_lab: ServiceLab) -> None:
    start_web_container(service_lab)
    with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        dmnc.wait_for_log("VM side ready")
        dmnc.process.send_signal(signal.SIGTERM)
        dmnc.wait_for_log("shutting down")  # trio merges a signal repeated before it is received: wait for this one
        dmnc.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert dmnc.process.wait(timeout=10) == 1
        assert time.monotonic() - started < 5
        assert "second SIGTERM: exiting now" in dmnc.log()
