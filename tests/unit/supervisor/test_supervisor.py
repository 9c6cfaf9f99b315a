"""The supervisor's own logic: which errors end it with one line, which are a lost Docker, and SIGHUP's reload."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest

from dmnc import config
from dmnc.config import Config, ConfigFlags
from dmnc.docker.errors import BadResponse, ConnectionLost
from dmnc.docker.models import IpamConfig, Network
from dmnc.routes import RouteError
from dmnc.routes.policy import NetworkInfo
from dmnc.supervisor.docker_watch import docker_problem
from dmnc.supervisor.supervisor import Supervisor, _fatal_error
from dmnc.supervisor.vm_keeper import _log_progress


def test_network_info_of_a_docker_network_carries_what_the_route_policy_needs() -> None:
    network = Network(
        id="abc",
        name="web",
        driver="bridge",
        scope="local",
        internal=True,
        labels={"dmnc.route": "false"},
        ipam_configs=(
            IpamConfig(ipaddress.ip_network("172.30.0.0/16")),
            IpamConfig(None),
            IpamConfig(ipaddress.ip_network("fd00:1::/64")),
        ),
    )
    info = NetworkInfo.of(network)
    assert (info.name, info.id, info.driver, info.scope, info.internal) == ("web", "abc", "bridge", "local", True)
    assert info.labels == {"dmnc.route": "false"}
    assert info.subnets == (ipaddress.ip_network("172.30.0.0/16"), ipaddress.ip_network("fd00:1::/64"))


def test_user_facing_errors_are_found_inside_exception_groups() -> None:
    error = RouteError("interface dmnc0 vanished")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("bug"), error])])
    assert _fatal_error(nested) is error
    assert _fatal_error(ExceptionGroup("only bugs", [ValueError("bug")])) is None


def test_docker_failures_are_found_inside_nursery_exception_groups() -> None:
    lost = ConnectionLost("the Docker daemon closed the connection mid-response", endpoint="GET /events")
    problem = docker_problem(ExceptionGroup("nursery", [ExceptionGroup("inner", [lost])]))
    assert problem is not None
    assert problem.startswith("lost Docker: ")
    assert docker_problem(ExceptionGroup("bugs", [KeyError("x")])) is None
    assert docker_problem(ValueError("bug")) is None


def test_a_docker_problem_escapes_the_daemons_control_characters() -> None:
    hostile = BadResponse("network \x1b[31mred\nFAKE LOG LINE", endpoint="GET /networks")
    assert docker_problem(hostile) == (
        "the Docker daemon misbehaves: network \\x1b[31mred\\x0aFAKE LOG LINE (GET /networks)"
    )


def test_setup_progress_from_the_daemon_is_logged_escaped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dmnc.supervisor"):
        _log_progress("Step 1/3 \x1b]0;pwned\x07")
    assert caplog.messages == ["setup: Step 1/3 \\x1b]0;pwned\\x07"]


def test_reload_applies_a_new_stale_limit_and_keeps_the_old_configuration_on_a_bad_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    supervisor = Supervisor(Config(), ConfigFlags())
    monkeypatch.setenv("DMNC_VM_STALE_AFTER", "4")
    with supervisor.events.subscribe() as subscription:
        supervisor.reload()
        assert subscription.receive.receive_nowait().kind == "config.reloaded"
    assert supervisor.current_config().vm_stale_after == 4.0
    monkeypatch.setenv("DMNC_VM_STALE_AFTER", "0")
    supervisor.reload()
    assert supervisor.current_config().vm_stale_after == 4.0
    assert "configuration not reloaded: DMNC_VM_STALE_AFTER: 0 seconds is not in 1-3600" in caplog.text


def test_an_explicit_udp_port_another_program_holds_is_refused_with_one_clear_line() -> None:
    from dmnc.supervisor.supervisor import ServiceError, open_udp  # noqa: PLC0415
    from dmnc.tunnel.udp import UdpEndpoint  # noqa: PLC0415

    holder = UdpEndpoint.open(0, ("127.0.0.1",))
    try:
        explicit = config.load_config(ConfigFlags(listen=f"127.0.0.1:{holder.port}"), {})
        with pytest.raises(ServiceError, match=rf"^UDP port {holder.port} is already in use \(another dmnc\?\)"):
            open_udp(explicit)
    finally:
        holder.close()
