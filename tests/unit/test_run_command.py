"""`dmnc run` / plain `dmnc`: flags to ConfigFlags, the root check, the configuration errors a user sees."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmnc import config
from dmnc.cli import build_parser, main
from dmnc.commands import run as run_command
from dmnc.commands.run import NOT_ROOT_MESSAGE, flags_from_args
from dmnc.config import Config, ConfigFlags
from dmnc.logsetup import LogLevel
from dmnc.supervisor import supervisor


@pytest.fixture(autouse=True)
def isolated_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No machine config file, no DMNC_* variables; the log handler `run` installs is removed afterwards."""
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    for name in [name for name in os.environ if name.startswith("DMNC_") or name == "LOG_LEVEL"]:
        monkeypatch.delenv(name)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def core_dumps_forbidden(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records the call instead of making the test process itself non-dumpable."""
    calls: list[bool] = []
    monkeypatch.setattr(run_command, "forbid_core_dumps", lambda: calls.append(True))
    return calls


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch, core_dumps_forbidden: list[bool]) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)


def parsed_flags(*arguments: str) -> ConfigFlags:
    return flags_from_args(build_parser().parse_args(["run", *arguments]))


def test_no_flags_means_nothing_given() -> None:
    assert parsed_flags() == ConfigFlags()


def test_every_contract_flag_reaches_the_config_flags() -> None:
    flags = parsed_flags(
        "--docker-host",
        "unix:///d.sock",
        "--listen",
        "[::1]:4000",
        "--endpoint",
        "host.docker.internal:4000",
        "--setup-image",
        "dmnc-setup:1",
        "--config",
        "/etc/other.toml",
        "--control-socket",
        "/run/d.sock",
        "--keep-vm-config",
        "--log-level",
        "warning",
        "--force-routes",
        "--route-include",
        "10.0.0.0/8",
        "--route-include",
        "proj_*",
        "--route-exclude",
        "bridge",
        "--route-allow",
        "8.8.8.0/24",
        "--route-over",
        "172.30.0.0/16",
        "--route-over",
        "fd77::/16",
        "--allow-inbound",
        "8088",
        "--allow-inbound",
        "53/udp",
    )
    assert flags == ConfigFlags(
        config_file="/etc/other.toml",
        docker_host="unix:///d.sock",
        listen="[::1]:4000",
        endpoint="host.docker.internal:4000",
        setup_image="dmnc-setup:1",
        control_socket="/run/d.sock",
        keep_vm_config=True,
        log_level="warning",
        force_routes=True,
        route_include=("10.0.0.0/8", "proj_*"),
        route_exclude=("bridge",),
        route_allow=("8.8.8.0/24",),
        route_over=("172.30.0.0/16", "fd77::/16"),
        allow_inbound=("8088", "53/udp"),
    )


def test_short_verbose_flag_means_debug_or_takes_a_level() -> None:
    assert parsed_flags("-v").log_level == "debug"
    assert parsed_flags("-v", "error").log_level == "error"


def test_not_root_is_refused_with_a_hint(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 501)
    assert main(["run"]) == 1
    assert capsys.readouterr().err == NOT_ROOT_MESSAGE + "\n"
    assert NOT_ROOT_MESSAGE.startswith("dmnc: must run as root")
    assert NOT_ROOT_MESSAGE.endswith("Try: sudo dmnc")


@pytest.mark.usefixtures("as_root")
def test_bad_flag_value_exits_2_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--listen", "0.0.0.0:70000"]) == 2
    assert capsys.readouterr().err == "dmnc: --listen: port 70000 is not in 0-65535\n"


@pytest.mark.usefixtures("as_root")
def test_bad_environment_value_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    assert main(["run"]) == 2
    assert capsys.readouterr().err.startswith("dmnc: LOG_LEVEL: unknown log level 'chatty'")


@pytest.mark.usefixtures("as_root")
def test_bad_config_file_exits_2_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dmnc.toml"
    path.write_text('log_level = "info"\nendpoint = "host:0"\n', encoding="utf-8")
    assert main(["run", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"dmnc: {path}:2 (endpoint): port 0 is not in 1-65535\n"


@pytest.mark.usefixtures("as_root")
def test_vm_stale_after_out_of_bounds_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--vm-stale-after", "0.1"]) == 2
    assert capsys.readouterr().err == "dmnc: --vm-stale-after: 0.1 seconds is not in 1-3600 (the default is 40)\n"


@pytest.fixture
def service_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Config, ConfigFlags]]:
    """Stands in for the service: records what `run` hands over and exits 0 at once."""
    handed_over: list[tuple[Config, ConfigFlags]] = []

    def fake_run(configuration: Config, flags: ConfigFlags) -> int:
        handed_over.append((configuration, flags))
        return 0

    monkeypatch.setattr(supervisor, "run", fake_run)
    return handed_over


@pytest.mark.usefixtures("as_root")
def test_valid_configuration_is_handed_to_the_service(service_runs: list[tuple[Config, ConfigFlags]]) -> None:
    assert main(["run", "--listen", "127.0.0.1"]) == 0
    [(configuration, flags)] = service_runs
    assert str(configuration.listen) == "127.0.0.1:3333"
    assert flags.listen == "127.0.0.1"


@pytest.mark.usefixtures("as_root")
def test_core_dumps_are_forbidden_before_the_service_starts(
    service_runs: list[tuple[Config, ConfigFlags]], core_dumps_forbidden: list[bool]
) -> None:
    assert main(["run"]) == 0
    assert core_dumps_forbidden == [True]
    assert len(service_runs) == 1


@pytest.mark.usefixtures("as_root")
def test_vm_stale_after_flag_reaches_the_service(service_runs: list[tuple[Config, ConfigFlags]]) -> None:
    assert main(["run", "--vm-stale-after", "4"]) == 0
    [(configuration, flags)] = service_runs
    assert configuration.vm_stale_after == 4.0
    assert flags.vm_stale_after == "4"


@pytest.mark.usefixtures("as_root")
def test_plain_dmnc_runs_the_service(
    service_runs: list[tuple[Config, ConfigFlags]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 0
    assert main(["--listen", "bad"]) == 2
    assert capsys.readouterr().err == "dmnc: --listen: 'bad' is not an IP address\n"
    assert main(["-v"]) == 0
    assert len(service_runs) == 2
    assert service_runs[1][0].log_level is LogLevel.DEBUG


def test_top_level_flags_keep_their_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert "status" in capsys.readouterr().out
