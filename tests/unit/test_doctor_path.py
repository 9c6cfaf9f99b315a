"""Doctor's path check: the path per family and why; a `--path direct` left on the tunnel warns, and on Docker
Desktop the setting that gives its VM a direct address is named."""

from __future__ import annotations

from dmnc.control.messages import DockerStatus, PathStatus, StatusSnapshot
from dmnc.doctor.checks import DIRECT_PATH_FIX, DOCKER_DESKTOP_DIRECT_FIX, CheckResult, Verdict, path_check

DIRECT = PathStatus("ipv4", "direct", "the VM answers", next_hop="192.168.106.2", interface="bridge100")
NO_LINK = PathStatus("ipv6", "tunnel", "the VM reported no IPv6 address on a link it shares with the host")


def snapshot(*paths: PathStatus, runtime: str = "Colima") -> StatusSnapshot:
    return StatusSnapshot(version="0.1.0", docker=DockerStatus(runtime=runtime, connected=True), paths=paths)


def test_the_path_of_each_family_is_shown_with_its_reason() -> None:
    assert path_check(snapshot(DIRECT, NO_LINK), "") == CheckResult(
        "path",
        Verdict.PASS,
        "IPv4 direct via 192.168.106.2 dev bridge100 (the VM answers); IPv6 tunnel (the VM reported no IPv6 address on"
        " a link it shares with the host)",
    )


def test_path_direct_left_on_the_tunnel_warns_with_the_fix_for_the_runtime() -> None:
    problem = PathStatus("ipv4", "tunnel", "--path direct, but no link", problem=True)
    assert path_check(snapshot(problem), "").fix == DIRECT_PATH_FIX
    result = path_check(snapshot(problem, runtime="Docker Desktop"), "")
    assert result.verdict is Verdict.WARN
    assert result.fix == DOCKER_DESKTOP_DIRECT_FIX
    assert "kernel networking for UDP" in DOCKER_DESKTOP_DIRECT_FIX


def test_docker_desktop_on_the_tunnel_gets_the_setting_as_a_hint_unless_the_tunnel_was_asked_for() -> None:
    tunnel4 = PathStatus("ipv4", "tunnel", "the VM reported no IPv4 address on a link it shares with the host")
    hinted = path_check(snapshot(tunnel4, NO_LINK, runtime="Docker Desktop"), "")
    assert hinted.verdict is Verdict.PASS
    assert hinted.fix == f"for kernel speed, {DOCKER_DESKTOP_DIRECT_FIX}"
    asked = PathStatus("ipv4", "tunnel", "--path tunnel")
    assert path_check(snapshot(asked, asked, runtime="Docker Desktop"), "").fix is None


def test_without_a_running_dmnc_or_paths_the_check_is_skipped() -> None:
    assert path_check(None, "dmnc is not running").verdict is Verdict.SKIP
    assert path_check(snapshot(), "").verdict is Verdict.SKIP
