"""`dmnc doctor`'s verdicts: the lines a user sees for each fact, decided without Docker or a network."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import ipaddress
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.cli import main
from dmnc.commands._common import EXIT_BAD_CONFIG
from dmnc.commands.doctor import MAX_PROBE_TIMEOUT_S, positive_seconds, render_check
from dmnc.config import Config, ConfigFlags, format_host_port, load_config
from dmnc.control.messages import DockerStatus, RouteStatus, StatusSnapshot, TunnelStatus, VmStatus
from dmnc.docker.discovery import Runtime
from dmnc.docker.errors import DiscoveryAttempt, DiscoveryError
from dmnc.doctor.checks import (
    CheckResult,
    Verdict,
    docker_unreachable_check,
    handshake_check,
    installed_routes_check,
    kernel_check,
    listen_advice,
    port_check,
    root_check,
    route_conflict_check,
    runtime_check,
    setup_image_check,
)
from dmnc.doctor.gather import DoctorSettings, run_doctor
from dmnc.doctor.probe import PROBE_SUBNETS, choose_probe_subnet
from dmnc.routes import InstalledRoute
from dmnc.routes.policy import (
    VM_NO_IPV6_FIX,
    HostNetwork,
    HostState,
    NetworkInfo,
    PolicyConfig,
    SkipReason,
)
from dmnc.tunnel.udp import UdpError
from dmnc.vm import KernelWireGuardMissing, KernelWireGuardPresent

SOCKET = "unix:///Users/me/.docker/run/docker.sock"


def running(listen: str = "0.0.0.0:3333", age: float | None = 12.0, **drops: int) -> StatusSnapshot:
    return StatusSnapshot(
        version="0.1.0",
        tunnel=TunnelStatus(
            interface="utun7", listen=listen, last_handshake_age_s=age, endpoint="192.168.65.3:51820", drops=drops
        ),
        docker=DockerStatus(host=SOCKET, runtime="Docker Desktop", api_version="1.47", connected=True),
        vm=VmStatus(mode="kernel"),
    )


def address_in_use(port: int) -> UdpError:
    error = UdpError(f"binding UDP 0.0.0.0 port {port}: Address already in use")
    error.__cause__ = OSError(errno.EADDRINUSE, "Address already in use")
    return error


def network(name: str, *subnets: str) -> NetworkInfo:
    return NetworkInfo(
        name=name,
        id=name,
        driver="bridge",
        scope="local",
        internal=False,
        subnets=tuple(ipaddress.ip_network(subnet) for subnet in subnets),
    )


def route(destination: str, interface: str, *, ours: bool = False) -> InstalledRoute:
    return InstalledRoute(ipaddress.ip_network(destination), interface, 7, ours)


def test_render_puts_the_fix_under_the_line() -> None:
    result = CheckResult("port", Verdict.FAIL, "taken", fix="choose another")
    assert render_check(result) == "FAIL port: taken\n  fix: choose another"
    assert render_check(CheckResult("root", Verdict.PASS, "running as root")) == "PASS root: running as root"


def test_render_escapes_control_characters_from_the_daemon() -> None:
    result = CheckResult("route-conflicts", Verdict.FAIL, "network 'a\x1b[2J\nPASS x' overlaps", fix="b\rc")
    assert render_check(result) == "FAIL route-conflicts: network 'a\\x1b[2J\\x0aPASS x' overlaps\n  fix: b\\x0dc"


def test_without_root_the_root_only_checks_are_named_as_skipped() -> None:
    assert root_check(True).verdict is Verdict.PASS
    result = root_check(False)
    assert result.verdict is Verdict.WARN
    assert "skipping vm-wireguard, probe" in result.detail
    assert result.fix == "sudo dmnc doctor"


def test_unreachable_docker_lists_every_place_tried() -> None:
    error = DiscoveryError(
        (
            DiscoveryAttempt("Docker Desktop", "/Users/me/.docker/run/docker.sock", "does not exist"),
            DiscoveryAttempt("system docker socket", "/var/run/docker.sock", "permission denied"),
        )
    )
    result = docker_unreachable_check(error)
    assert result.verdict is Verdict.FAIL
    assert "Docker Desktop: /Users/me/.docker/run/docker.sock: does not exist" in result.detail
    assert "system docker socket: /var/run/docker.sock: permission denied" in result.detail
    assert result.fix is not None
    assert "sudo dmnc doctor" in result.fix


def test_docker_not_found_anywhere_says_to_start_it_or_name_the_socket() -> None:
    result = docker_unreachable_check(DiscoveryError((DiscoveryAttempt("Colima", "/Users/me/.colima", "no profile"),)))
    assert result.fix is not None
    assert "--docker-host" in result.fix


def test_native_linux_docker_engine_is_told_plainly_that_dmnc_is_not_needed() -> None:
    result = runtime_check(Runtime.DOCKER_ENGINE, "linux", "unix:///var/run/docker.sock", "1.41")
    assert result.verdict is Verdict.WARN
    assert "already routable from the host: dmnc is not needed" in result.detail


def test_orbstack_is_told_plainly_that_dmnc_is_not_needed() -> None:
    result = runtime_check(Runtime.ORBSTACK, "darwin", SOCKET, "1.47")
    assert result.verdict is Verdict.WARN
    assert "OrbStack routes container IPs to the host itself, dmnc is not needed" in result.detail


@pytest.mark.parametrize("runtime", [Runtime.DOCKER_DESKTOP, Runtime.COLIMA, Runtime.PODMAN, Runtime.DOCKER_ENGINE])
def test_engines_in_a_vm_on_macos_need_dmnc(runtime: Runtime) -> None:
    result = runtime_check(runtime, "darwin", SOCKET, "1.47")
    assert result.verdict is Verdict.PASS
    assert result.detail.startswith(f"{runtime.value} at {SOCKET} (API 1.47)")


def test_native_podman_on_linux_is_told_dmnc_is_not_needed_but_a_podman_machine_needs_it() -> None:
    native = runtime_check(Runtime.PODMAN, "linux", "unix:///run/podman/podman.sock", "1.41")
    assert native.verdict is Verdict.WARN
    assert "rootful containers are already routable from the host: dmnc is not needed" in native.detail
    machine = "unix:///home/me/.local/share/containers/podman/machine/qemu/podman.sock"
    assert runtime_check(Runtime.PODMAN, "linux", machine, "1.41").verdict is Verdict.PASS


def test_docker_desktop_on_linux_runs_in_a_vm_and_needs_dmnc() -> None:
    assert runtime_check(Runtime.DOCKER_DESKTOP, "linux", SOCKET, "1.47").verdict is Verdict.PASS


def test_free_port_passes() -> None:
    assert port_check(3333, False, None, None) == CheckResult("port", Verdict.PASS, "UDP port 3333 is free")


def test_port_held_by_the_running_dmnc_passes() -> None:
    result = port_check(3333, False, address_in_use(3333), running("0.0.0.0:3333"))
    assert result == CheckResult("port", Verdict.PASS, "UDP port 3333 is held by the running dmnc")


def test_default_port_taken_by_another_program_warns_about_the_fallback() -> None:
    result = port_check(3333, False, address_in_use(3333), running("0.0.0.0:40001"))
    assert result.verdict is Verdict.WARN
    assert "taken by another program: dmnc falls back to a free port; the running dmnc listens on 40001" in (
        result.detail
    )


def test_explicit_port_taken_by_another_program_fails_with_a_way_to_find_it() -> None:
    result = port_check(3399, True, address_in_use(3399), None, "linux")
    assert result.verdict is Verdict.FAIL
    assert result.fix is not None
    assert "ss -ulpn 'sport = :3399'" in result.fix
    assert "sudo lsof -nP -iUDP:3399" in (port_check(3399, True, address_in_use(3399), None, "darwin").fix or "")
    assert result.fix is not None
    assert ":3399" in result.fix
    assert "--listen ADDR:PORT" in result.fix


def test_other_bind_errors_fail_with_the_reason() -> None:
    error = UdpError("binding UDP 0.0.0.0 port 3333: Permission denied")
    error.__cause__ = OSError(errno.EACCES, "Permission denied")
    result = port_check(3333, False, error, None)
    assert result.verdict is Verdict.FAIL
    assert "Permission denied" in result.detail


@settings(deadline=None)
@given(listen=st.text(max_size=40))
def test_any_listen_text_in_a_status_gives_a_verdict(listen: str) -> None:
    result = port_check(3333, False, address_in_use(3333), running(listen))
    assert result.verdict in (Verdict.PASS, Verdict.WARN)


def test_setup_image_verdicts() -> None:
    assert setup_image_check("dmnc-setup:0.1.0", True, False).verdict is Verdict.PASS
    missing_default = setup_image_check("dmnc-setup:0.1.0", False, False)
    assert missing_default.verdict is Verdict.WARN
    assert "builds it at start" in missing_default.detail
    assert missing_default.fix is not None
    assert "--setup-image" in missing_default.fix
    missing_explicit = setup_image_check("registry.example/setup:1", False, True)
    assert "pulls it at start" in missing_explicit.detail


def test_kernel_verdicts() -> None:
    assert kernel_check(KernelWireGuardPresent("6.10.14-linuxkit")).verdict is Verdict.PASS
    missing = kernel_check(KernelWireGuardMissing("5.10.0"))
    assert missing.verdict is Verdict.WARN
    assert "5.10.0 has no WireGuard" in missing.detail
    assert "wireguard-go" in missing.detail


def test_handshake_skipped_when_dmnc_is_not_running() -> None:
    assert handshake_check(None, "dmnc is not running") == CheckResult("handshake", Verdict.SKIP, "dmnc is not running")


def test_recent_handshake_passes_with_its_age_and_drops() -> None:
    result = handshake_check(running(age=12.4, replay=3, invalid_mac=0), "")
    assert result.verdict is Verdict.PASS
    assert "last handshake 12 s ago from 192.168.65.3:51820 (kernel WireGuard); dropped packets: replay 3" in (
        result.detail
    )


def test_vm_dialing_from_loopback_gets_the_loopback_listen_address() -> None:
    snapshot = running(listen="0.0.0.0:3333")
    snapshot = dataclasses.replace(snapshot, tunnel=dataclasses.replace(snapshot.tunnel, endpoint="127.0.0.1:61000"))
    result = handshake_check(snapshot, "")
    assert result.verdict is Verdict.PASS
    assert result.fix is not None
    assert "--listen 127.0.0.1:3333" in result.fix
    assert "127.0.0.1:61000" in result.fix


@pytest.mark.parametrize(
    ("listen", "vm_endpoint", "local_address", "advice"),
    [
        ("[::]:51820", "[::1]:40000", None, "--listen [::1]:51820"),
        ("0.0.0.0:51820", "192.168.106.2:51820", "192.168.106.1", "--listen 192.168.106.1:51820"),
        ("[::]:51820", "[fd00:106::2]:51820", "fd00:106::1", "--listen [fd00:106::1]:51820"),
        # Already narrowed: nothing to say.
        ("127.0.0.1:51820", "127.0.0.1:40000", None, None),
        # A VM on a private network whose host side is unknown, or reached over a public address: no advice.
        ("0.0.0.0:51820", "192.168.106.2:51820", None, None),
        ("0.0.0.0:51820", "203.0.113.9:51820", "198.51.100.1", None),
        ("0.0.0.0:51820", "192.168.106.2:51820", "203.0.113.4", None),
        # Link-local addresses change with the interface: not stable enough to name.
        ("[::]:51820", "[fe80::2]:51820", "fe80::1", None),
        (None, "127.0.0.1:1", None, None),
        ("0.0.0.0:51820", None, None, None),
        ("0.0.0.0:51820", "garbage", None, None),
    ],
)
def test_listen_advice_only_for_a_known_stable_address(
    listen: str | None, vm_endpoint: str | None, local_address: str | None, advice: str | None
) -> None:
    result = listen_advice(listen, vm_endpoint, local_address)
    if advice is None:
        assert result is None
    else:
        assert result is not None
        assert advice in result


@given(st.text(max_size=60), st.text(max_size=60), st.one_of(st.none(), st.text(max_size=40)))
def test_listen_advice_never_raises_on_any_text(listen: str, vm_endpoint: str, local_address: str | None) -> None:
    listen_advice(listen, vm_endpoint, local_address)


def test_no_handshake_yet_fails_with_what_to_look_at() -> None:
    result = handshake_check(running(age=None), "")
    assert result.verdict is Verdict.FAIL
    assert result.fix is not None
    assert "UDP 0.0.0.0:3333" in result.fix


def test_expired_session_fails() -> None:
    result = handshake_check(running(age=600.0), "")
    assert result.verdict is Verdict.FAIL
    assert "600 s ago: the session expired" in result.detail


def test_route_overlap_with_a_vpn_route_names_both() -> None:
    result = route_conflict_check(
        [network("web", "10.8.0.0/24"), network("db", "172.20.0.0/16")],
        PolicyConfig(),
        [route("10.8.0.0/16", "utun4"), route("0.0.0.0/0", "en0")],
    )
    assert result.verdict is Verdict.FAIL
    assert "network 'web' subnet 10.8.0.0/24 overlaps the route 10.8.0.0/16 dev utun4" in result.detail
    assert "db" not in result.detail
    assert result.fix is not None
    assert "--route-over SUBNET" in result.fix


def test_forced_overlap_warns() -> None:
    result = route_conflict_check(
        [network("web", "10.8.0.0/24")], PolicyConfig(force=True), [route("10.8.0.0/16", "utun4")]
    )
    assert result.verdict is Verdict.WARN
    assert "routed anyway" in result.detail


def test_subnets_the_host_uses_itself_are_named_with_a_warning_not_called_overlaps() -> None:
    host = HostState(
        tunnel=(ipaddress.ip_network("10.33.33.1/32"),),
        networks=(HostNetwork("en0", ipaddress.ip_network("192.168.1.0/24")),),
        dns_servers=(ipaddress.ip_address("10.77.0.53"),),
    )
    result = route_conflict_check(
        [network("lan", "192.168.1.0/24"), network("dns", "10.77.0.0/24"), network("web", "172.18.0.0/16")],
        PolicyConfig(),
        [route("192.168.1.0/24", "en0"), route("0.0.0.0/0", "en0")],
        host,
    )
    assert result.verdict is Verdict.WARN
    assert result.detail == (
        "network 'dns' subnet 10.77.0.0/24 is not routed: this host's DNS server: contains the DNS server 10.77.0.53; "
        "no option routes it: give the Docker network another subnet; "
        "network 'lan' subnet 192.168.1.0/24 is not routed: this host's own network: overlaps 192.168.1.0/24 on en0; "
        "no option routes it: give the Docker network another subnet"
    )


def test_dmncs_own_routes_and_default_routes_are_no_conflict() -> None:
    result = route_conflict_check(
        [network("web", "172.18.0.0/16")],
        PolicyConfig(),
        [route("172.18.0.0/16", "utun7", ours=True), route("0.0.0.0/0", "en0"), route("192.168.1.0/24", "en0")],
    )
    assert result == CheckResult(
        "route-conflicts", Verdict.PASS, "1 subnet(s) to route, none overlaps another route of this host"
    )


@given(
    taken=st.lists(
        st.builds(
            lambda address, prefix: ipaddress.IPv4Network((address, prefix), strict=False),
            st.integers(0, 2**32 - 1),
            st.integers(1, 32),
        ),
        max_size=20,
    )
)
def test_the_probe_subnet_overlaps_nothing_taken(taken: list[ipaddress.IPv4Network]) -> None:
    chosen = choose_probe_subnet(taken)
    if chosen is None:
        assert all(any(candidate.overlaps(other) for other in taken) for candidate in PROBE_SUBNETS)
    else:
        assert chosen in PROBE_SUBNETS
        assert not any(chosen.overlaps(other) for other in taken)


def test_default_routes_never_block_the_probe_subnet() -> None:
    assert choose_probe_subnet([ipaddress.IPv4Network("0.0.0.0/0")]) == PROBE_SUBNETS[0]


def config_without_docker(tmp_path: Path) -> Config:
    """An empty config file, a Docker socket that does not exist, no running dmnc."""
    config_file = tmp_path / "config.toml"
    config_file.write_text("", encoding="utf-8")
    flags = ConfigFlags(
        config_file=str(config_file),
        docker_host=f"unix://{tmp_path}/missing.sock",
        listen="127.0.0.1:0",
        control_socket=str(tmp_path / "dmnc.sock"),
    )
    return load_config(flags, {})


async def test_without_docker_every_docker_check_is_skipped_and_docker_fails(tmp_path: Path) -> None:
    config = config_without_docker(tmp_path)
    seen: list[CheckResult] = []
    with trio.fail_after(30):
        results = await run_doctor(DoctorSettings(config=config, is_root=False), seen.append)
    assert seen == results
    assert [(result.name, result.verdict) for result in results] == [
        ("root", Verdict.WARN),
        ("docker", Verdict.FAIL),
        ("runtime", Verdict.SKIP),
        ("port", Verdict.PASS),
        ("setup-image", Verdict.SKIP),
        ("vm-wireguard", Verdict.SKIP),
        ("docker-firewall", Verdict.SKIP),
        ("handshake", Verdict.SKIP),
        ("coexistence", Verdict.PASS),
        ("route-conflicts", Verdict.SKIP),
        ("routes", Verdict.SKIP),
        ("path", Verdict.SKIP),
        ("dns", Verdict.SKIP),
        ("dns-resolve", Verdict.SKIP),
        ("resolver-files", Verdict.SKIP),
        ("probe", Verdict.SKIP),
    ]
    assert f"{tmp_path}/missing.sock: does not exist" in results[1].detail
    assert "dmnc is not running" in results[7].detail


@settings(deadline=None)
@given(text=st.text(max_size=30))
def test_probe_timeout_flag_accepts_only_finite_positive_seconds(text: str) -> None:
    value: float | None = None
    problem = ""
    try:
        value = positive_seconds(text)
    except argparse.ArgumentTypeError as error:
        problem = str(error)
    if value is None:
        assert repr(text) in problem
    else:
        assert 0 < value <= MAX_PROBE_TIMEOUT_S


@pytest.fixture
def empty_config(tmp_path: Path) -> Path:
    config_file = tmp_path / "config.toml"
    config_file.write_text("", encoding="utf-8")
    return config_file


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--probe", "Not An Image"], "dmnc doctor: --probe: 'Not An Image' is not an image reference"),
        (["--listen", "0.0.0.0:99999"], "dmnc doctor: --listen"),
    ],
)
def test_bad_values_exit_2_with_one_line_naming_the_flag(
    argv: list[str], message: str, empty_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--config", str(empty_config), *argv]) == EXIT_BAD_CONFIG
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err


def test_a_bad_probe_timeout_is_a_usage_error(empty_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["doctor", "--config", str(empty_config), "--probe-timeout", "0"])
    assert exited.value.code == EXIT_BAD_CONFIG
    assert "--probe-timeout: '0' must be more than 0" in capsys.readouterr().err


def with_routes(*routes: RouteStatus) -> StatusSnapshot:
    return dataclasses.replace(running(), routes=routes)


def route_status(subnet: str, network: str, installed: bool, reason: str | None = None) -> RouteStatus:
    return RouteStatus(ipaddress.ip_network(subnet), network, installed, reason)


def test_routes_check_passes_when_every_wanted_subnet_is_installed_and_ignores_deliberate_skips() -> None:
    result = installed_routes_check(
        with_routes(
            route_status("172.17.0.0/16", "bridge", True),
            route_status("10.8.0.0/24", "web", False, "overlaps a route dmnc does not own"),
            route_status("172.20.0.0/16", "other", False, "matches an exclude pattern"),
        ),
        "",
    )
    assert result == CheckResult(
        "routes",
        Verdict.PASS,
        "1 container subnet(s) routed through utun7; not routed: 10.8.0.0/24 (web): overlaps a route dmnc does not own"
        "; not routed: 172.20.0.0/16 (other): matches an exclude pattern",
    )


def test_routes_check_warns_per_ipv6_subnet_a_vm_without_ipv6_cannot_reach() -> None:
    reason = SkipReason.VM_NO_IPV6.value + ": the tunnel carries IPv4 only; enable IPv6 in the VM"
    no_ipv6 = dataclasses.replace(route_status("fd77:31::/64", "web", False, reason), decision="vm-no-ipv6")
    result = installed_routes_check(with_routes(route_status("172.31.31.0/24", "web", True), no_ipv6), "")
    assert result.verdict is Verdict.WARN
    assert result.detail == f"1 container subnet(s) routed through utun7; not routed: fd77:31::/64 (web): {reason}"
    assert result.fix == VM_NO_IPV6_FIX


def test_routes_check_prints_the_decision_for_every_subnet_left_out() -> None:
    reason = "special-purpose range: overlaps 127.0.0.0/8, loopback (RFC 6890); no option routes it"
    left_out = dataclasses.replace(route_status("127.0.0.0/16", "evil", False, reason), decision="special-purpose")
    taken = dataclasses.replace(route_status("172.30.5.0/24", "app", False, "yielded: taken by x"), decision="taken")
    result = installed_routes_check(with_routes(route_status("172.17.0.0/16", "bridge", True), left_out, taken), "")
    assert result.verdict is Verdict.PASS
    assert f"not routed: 127.0.0.0/16 (evil): {reason}" in result.detail
    assert "not routed: 172.30.5.0/24 (app): yielded: taken by x" in result.detail


def test_routes_dmnc_could_not_install_fail_naming_subnet_network_and_reason() -> None:
    result = installed_routes_check(
        with_routes(
            route_status("172.17.0.0/16", "bridge", True),
            route_status("172.18.0.0/16", "web", False, "taken by another program"),
        ),
        "",
    )
    assert result.verdict is Verdict.FAIL
    assert "1 of 2 routed through utun7; not routed: 172.18.0.0/16 (web): taken by another program" in result.detail


def test_routes_still_being_added_only_warn() -> None:
    result = installed_routes_check(with_routes(route_status("172.18.0.0/16", "web", False, "not installed yet")), "")
    assert result.verdict is Verdict.WARN


def test_routes_check_skipped_without_a_running_dmnc() -> None:
    assert installed_routes_check(None, "dmnc is not running").verdict is Verdict.SKIP


def test_ipv6_endpoints_of_the_running_dmnc_are_shown_in_brackets() -> None:
    """The service writes endpoints with format_host_port; doctor quotes them as they are and reads the port."""
    snapshot = running(format_host_port("fd00::2", 3333))
    snapshot = dataclasses.replace(
        snapshot, tunnel=dataclasses.replace(snapshot.tunnel, endpoint=format_host_port("fd00::1", 51820))
    )
    assert port_check(3333, False, address_in_use(3333), snapshot).detail == "UDP port 3333 is held by the running dmnc"
    assert "from [fd00::1]:51820 (kernel WireGuard)" in handshake_check(snapshot, "").detail
    silent = dataclasses.replace(snapshot, tunnel=dataclasses.replace(snapshot.tunnel, last_handshake_age_s=None))
    assert "the VM must reach this host on UDP [fd00::2]:3333 " in (handshake_check(silent, "").fix or "")
