"""The real `dmnc doctor` command against a private dockerd in the service lab, with and without a running dmnc.

The lab (tests/lab/service_lab.py, one shared by this module's tests): dmnc's "host" namespace and dockerd's "VM"
namespace joined by a veth; this kernel has no WireGuard, so the VM end is the userspace fallback and doctor's kernel
check says so.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmnc.vm.runner import default_setup_image
from tests.conftest import require_root, require_tools
from tests.lab.dockerd import BUSYBOX_REFERENCE, running_podman
from tests.lab.netns import Netns, netns
from tests.lab.service_lab import HOST_ADDRESS, ServiceLab, running_dmnc, status_json, vm_leftovers
from tests.lab.setup_image import LAB_SETUP_IMAGE
from tests.lab.wait import wait_until

pytestmark = pytest.mark.lab

TUNNEL_ADDRESS = "10.33.33.1"
DNS_DOMAIN = "dmnc.internal"

# Doctor bounds each of its own steps; this only stops a broken test from waiting forever.
DOCTOR_TIMEOUT_S = 120.0
NOBODY = 65534


@pytest.fixture
def public_config_file() -> Iterator[Path]:
    """An empty config file every user may read: the lab's work directory is private to root."""
    with tempfile.TemporaryDirectory(prefix="dmnc-doctor-public-") as directory:
        Path(directory).chmod(0o755)
        path = Path(directory) / "config.toml"
        path.write_text("", encoding="utf-8")
        path.chmod(0o644)
        yield path


def doctor(
    lab: ServiceLab,
    *extra: str,
    as_user: int | None = None,
    config_file: Path | None = None,
    namespace: Netns | None = None,
    resolv_conf: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`dmnc doctor` in the lab's host namespace (or `namespace`), as root or (`as_user`) as that uid without any
    groups; with `resolv_conf` mounted over /etc/resolv.conf in a mount namespace of its own."""
    drop_root = [] if as_user is None else ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups"]
    # unshare(1) with private propagation: the bind mount is seen by doctor only, never by this machine.
    own_resolver = (
        []
        if resolv_conf is None
        else [
            *("unshare", "--mount", "--propagation", "private", "sh", "-c"),
            *('mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv_conf)),
        ]
    )
    argv = [
        *own_resolver,
        *drop_root,
        sys.executable,
        "-m",
        "dmnc",
        "doctor",
        "--docker-host",
        f"unix://{lab.engine.socket_path}",
        "--setup-image",
        LAB_SETUP_IMAGE,
        "--control-socket",
        str(lab.control_socket),
        "--config",
        str(config_file or lab.config_file),
        *extra,
    ]
    completed = (namespace or lab.host).run(argv, check=False, timeout=DOCTOR_TIMEOUT_S)
    print(completed.stdout, completed.stderr)  # shown by pytest when an assertion fails
    assert "Traceback" not in completed.stderr
    return completed


def lines_by_check(output: str) -> dict[str, str]:
    """`VERDICT name: detail` lines by name (the `  fix:` lines stay attached to the line above)."""
    checks: dict[str, str] = {}
    name = ""
    for line in output.splitlines():
        if line.startswith("  fix: "):
            checks[name] += "\n" + line
        else:
            name = line.split(" ", 2)[1].rstrip(":")
            checks[name] = line
    return checks


def containers_and_networks(lab: ServiceLab) -> tuple[list[str], list[str]]:
    containers = lab.engine_request("GET", "/containers/json", params={"all": "1"}).json()
    networks = lab.engine_request("GET", "/networks").json()
    return sorted(container["Id"] for container in containers), sorted(network["Name"] for network in networks)


def test_without_dmnc_doctor_checks_docker_image_and_kernel_and_leaves_nothing(service_lab: ServiceLab) -> None:
    before = containers_and_networks(service_lab)
    completed = doctor(service_lab, "--probe", BUSYBOX_REFERENCE)
    checks = lines_by_check(completed.stdout)
    assert list(checks) == [
        "root",
        "docker",
        "runtime",
        "port",
        "setup-image",
        "vm-wireguard",
        "docker-firewall",
        "handshake",
        "coexistence",
        "route-conflicts",
        "routes",
        "path",
        "dns",
        "dns-resolve",
        "resolver-files",
        "probe",
    ]
    assert checks["root"] == "PASS root: running as root"
    assert checks["docker"].startswith(f"PASS docker: --docker-host: unix://{service_lab.engine.socket_path} answers")
    assert checks["runtime"].startswith("WARN runtime: Docker Engine at ")
    assert "containers are already routable from the host: dmnc is not needed" in checks["runtime"]
    assert checks["port"] == "PASS port: UDP port 3333 is free"
    assert checks["setup-image"] == f"PASS setup-image: {LAB_SETUP_IMAGE} is in the VM"
    assert checks["vm-wireguard"].startswith("WARN vm-wireguard: the VM kernel ")
    assert "has no WireGuard: dmnc runs chip0 in a wireguard-go container" in checks["vm-wireguard"]
    assert checks["docker-firewall"].startswith("PASS docker-firewall: Docker's firewall is iptables")
    assert checks["handshake"].startswith("SKIP handshake: dmnc is not running")
    assert checks["coexistence"] == "PASS coexistence: no other interface holds the tunnel addresses"
    assert checks["route-conflicts"].startswith("PASS route-conflicts: ")
    assert checks["path"].startswith("SKIP path: dmnc is not running")
    assert checks["dns"].startswith("SKIP dns: dmnc is not running")
    assert checks["dns-resolve"].startswith("SKIP dns-resolve: dmnc is not running")
    assert checks["resolver-files"] == "SKIP resolver-files: macOS only (/etc/resolver, resolver(5))"
    assert checks["probe"] == "SKIP probe: needs a running dmnc (see handshake)"
    assert completed.returncode == 0
    assert containers_and_networks(service_lab) == before
    assert vm_leftovers(service_lab) == []


def test_a_host_route_overlapping_a_docker_network_fails_naming_both(service_lab: ServiceLab) -> None:
    gateway = HOST_ADDRESS.split("/", maxsplit=1)[0].rsplit(".", 1)[0] + ".2"
    service_lab.host.run(["ip", "route", "add", "172.17.5.0/24", "via", gateway])
    completed = doctor(service_lab)
    conflict = lines_by_check(completed.stdout)["route-conflicts"]
    assert conflict.startswith(
        f"FAIL route-conflicts: network 'bridge' subnet 172.17.0.0/16 overlaps the route 172.17.5.0/24 via {gateway}"
    )
    assert "\n  fix: give the Docker network a subnet that overlaps nothing" in conflict
    assert completed.returncode == 1


def test_with_dmnc_running_doctor_sees_its_port_and_handshake_and_reaches_a_probe_container(
    service_lab: ServiceLab,
) -> None:
    with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        dmnc.wait_for_log("tunnel up")
        before = containers_and_networks(service_lab)
        completed = doctor(service_lab, "--probe", BUSYBOX_REFERENCE)
        checks = lines_by_check(completed.stdout)
        assert checks["port"] == "PASS port: UDP port 3333 is held by the running dmnc"
        assert checks["handshake"].startswith("PASS handshake: last handshake ")
        assert checks["routes"].startswith("PASS routes: 1 container subnet(s) routed through dmnc")
        assert "(userspace WireGuard)" in checks["handshake"]
        # dmnc's own TUN holds 10.33.33.1 now: that is no conflict.
        assert checks["coexistence"] == "PASS coexistence: no other interface holds the tunnel addresses"
        assert checks["probe"].startswith("PASS probe: reached a container at 172.30.253.2 on the new network")
        assert completed.returncode == 0
        assert containers_and_networks(service_lab) == before

        # From a namespace without dmnc's interface (its status names dmnc0, which is not there): still a verdict.
        with netns("dmdoc") as elsewhere:
            routes = lines_by_check(doctor(service_lab, namespace=elsewhere).stdout)["route-conflicts"]
        assert routes.startswith("PASS route-conflicts: ")
        assert dmnc.stop() == 0


def start_named_container(lab: ServiceLab, name: str) -> str:
    """A busybox container named `name` on the default bridge; returns its IPv4 address."""
    body = {"Image": BUSYBOX_REFERENCE, "Cmd": ["sleep", "600"]}
    created = lab.engine_request("POST", "/containers/create", params={"name": name}, json=body).json()
    lab.engine_request("POST", f"/containers/{created['Id']}/start")
    settings = lab.engine_request("GET", f"/containers/{created['Id']}/json").json()["NetworkSettings"]
    return str(settings["Networks"]["bridge"]["IPAddress"])


def test_doctor_reports_the_dns_port_and_resolves_a_container_name_through_glibc(
    service_lab: ServiceLab, tmp_path: Path
) -> None:
    address = start_named_container(service_lab, "doc_web")
    name = f"doc-web.{DNS_DOMAIN}"  # `_` becomes `-` (dmnc/dns/names.py)
    with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        dmnc.wait_for_log("tunnel up")
        wait_until(lambda: (status_json(service_lab)["dns"] or {}).get("records", 0) > 0, 30.0, "a name in DNS")
        # This lab has no systemd-resolved and nothing points the resolver at dmnc: the check fails with the fix.
        checks = lines_by_check(doctor(service_lab).stdout)
        assert checks["dns"].startswith(f"WARN dns: answers for {DNS_DOMAIN} on {TUNNEL_ADDRESS}")
        assert "port 53: " in checks["dns"]
        assert "the host's resolver does not ask it (not configured: " in checks["dns"]
        assert checks["dns-resolve"].startswith(f"FAIL dns-resolve: {name} does not resolve through the system")
        assert f"dmnc answers {address}" in checks["dns-resolve"]
        assert f"resolvectl domain dmnc0 ~{DNS_DOMAIN}" in checks["dns-resolve"]

        # glibc asking dmnc (resolv.conf(5) naming the tunnel address, as resolved's stub would forward): a pass.
        resolv_conf = tmp_path / "resolv.conf"
        resolv_conf.write_text(f"nameserver {TUNNEL_ADDRESS}\noptions timeout:1 attempts:1\n", encoding="utf-8")
        passed = lines_by_check(doctor(service_lab, resolv_conf=resolv_conf).stdout)["dns-resolve"]
        assert passed == f"PASS dns-resolve: {name} resolves to {address} (system resolver)"
        assert dmnc.stop() == 0


def test_json_output_is_one_object_and_a_bad_config_exits_2(service_lab: ServiceLab) -> None:
    completed = doctor(service_lab, "--json")
    assert completed.returncode == 0
    report = json.loads(completed.stdout)
    assert report["ok"] is True
    assert [check["name"] for check in report["checks"]][:3] == ["root", "docker", "runtime"]
    bad = doctor(service_lab, "--listen", "0.0.0.0:99999")
    assert bad.returncode == 2
    assert "dmnc doctor: --listen" in bad.stderr


def test_as_a_user_without_docker_access_doctor_names_the_socket_and_skips_the_root_checks(
    service_lab: ServiceLab, public_config_file: Path
) -> None:
    completed = doctor(service_lab, as_user=NOBODY, config_file=public_config_file)
    checks = lines_by_check(completed.stdout)
    assert checks["root"].startswith("WARN root: not root: skipping vm-wireguard, probe")
    assert checks["docker"].startswith(
        f"FAIL docker: no Docker daemon answered; tried --docker-host: unix://{service_lab.engine.socket_path}: "
    )
    assert "ermission denied" in checks["docker"]
    assert (
        "\n  fix: sudo dmnc doctor (dmnc runs as root), or join the group that owns the Docker socket"
        in (checks["docker"])
    )
    assert checks["vm-wireguard"] == "SKIP vm-wireguard: needs Docker"
    assert completed.returncode == 1


def test_a_probe_image_that_does_not_exist_fails_and_leaves_no_network(service_lab: ServiceLab) -> None:
    with running_dmnc(service_lab, "--path", "tunnel") as dmnc:
        dmnc.wait_for_log("tunnel up")
        before = containers_and_networks(service_lab)
        completed = doctor(service_lab, "--probe", "dmnc-test/absent:1")
        probe = lines_by_check(completed.stdout)["probe"]
        assert probe.startswith("FAIL probe: cannot start a probe container from dmnc-test/absent:1 on a test network")
        assert "\n  fix: pass --probe with an image present in the VM" in probe
        assert completed.returncode == 1
        assert containers_and_networks(service_lab) == before
        assert dmnc.stop() == 0


def test_a_daemon_that_accepts_but_never_answers_is_reported_not_waited_for(tmp_path: Path) -> None:
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        silent.bind(str(tmp_path / "silent.sock"))
        silent.listen(8)  # connections queue in the backlog; nothing ever reads or answers them
        config_file = tmp_path / "config.toml"
        config_file.write_text("", encoding="utf-8")
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "dmnc",
                "doctor",
                "--docker-host",
                f"unix://{tmp_path}/silent.sock",
                "--config",
                str(config_file),
                "--control-socket",
                str(tmp_path / "dmnc.sock"),
                "--listen",
                "127.0.0.1:0",
            ],
            capture_output=True,
            text=True,
            timeout=DOCTOR_TIMEOUT_S,
            check=False,
        )
    finally:
        silent.close()
    checks = lines_by_check(completed.stdout)
    assert checks["docker"].startswith(
        f"FAIL docker: no Docker daemon answered; tried --docker-host: unix://{tmp_path}"
    )
    assert "did not answer in time" in checks["docker"]
    assert completed.returncode == 1


def test_a_probe_container_dmnc_does_not_route_fails_with_what_to_check_and_is_removed(service_lab: ServiceLab) -> None:
    # dmnc is told (by its own flag, which doctor does not see) not to route the probe subnets.
    with running_dmnc(service_lab, "--path", "tunnel", "--route-exclude", "172.30.253.0/24") as dmnc:
        dmnc.wait_for_log("tunnel up")
        before = containers_and_networks(service_lab)
        completed = doctor(service_lab, "--probe", BUSYBOX_REFERENCE, "--probe-timeout", "4")
        probe = lines_by_check(completed.stdout)["probe"]
        assert probe.startswith("FAIL probe: the container at 172.30.253.2 on the new network dmnc-doctor-")
        assert "did not answer from this host within" in probe
        assert "\n  fix: run `dmnc status`: is the route of the new network installed" in probe
        assert completed.returncode == 1
        assert containers_and_networks(service_lab) == before
        assert dmnc.stop() == 0


def test_native_podman_is_told_plainly_that_dmnc_is_not_needed_and_the_missing_setup_image_is_explained(
    tmp_path: Path,
) -> None:
    require_root()
    require_tools("ip", "podman")
    config_file = tmp_path / "config.toml"
    config_file.write_text("", encoding="utf-8")
    with running_podman() as engine:
        argv = [
            sys.executable,
            "-m",
            "dmnc",
            "doctor",
            "--docker-host",
            f"unix://{engine.socket_path}",
            "--config",
            str(config_file),
            "--control-socket",
            str(tmp_path / "dmnc.sock"),
        ]
        completed = Netns(engine.netns).run(argv, check=False, timeout=DOCTOR_TIMEOUT_S)
        print(completed.stdout, completed.stderr)  # shown by pytest when an assertion fails
    runtime = lines_by_check(completed.stdout)["runtime"]
    assert runtime.startswith(f"WARN runtime: Podman at unix://{engine.socket_path}")
    assert "rootful containers are already routable from the host: dmnc is not needed" in runtime
    # No --setup-image: the built-in one, which this engine has never built.
    assert lines_by_check(completed.stdout)["setup-image"].startswith(
        f"WARN setup-image: {default_setup_image()} is not built yet: dmnc builds it at start"
    )
    assert "Traceback" not in completed.stderr
