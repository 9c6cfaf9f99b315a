"""`dmnc docker` when no daemon answers: every place tried is listed and the exit code says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmnc.cli import main


def isolate_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty config file and no Docker-related environment, whatever the machine running the tests has."""
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("DMNC_CONFIG", str(config))
    for variable in ("DMNC_DOCKER_HOST", "DOCKER_HOST", "DOCKER_CONTEXT"):
        monkeypatch.delenv(variable, raising=False)


def test_unreachable_docker_host_lists_the_attempt_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_config(tmp_path, monkeypatch)
    missing = tmp_path / "docker.sock"
    assert main(["docker", "--docker-host", f"unix://{missing}"]) == 1
    stderr = capsys.readouterr().err
    assert f"--docker-host: unix://{missing}: does not exist" in stderr
    assert stderr.rstrip().endswith("dmnc: no Docker daemon found")


def test_bad_docker_host_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_config(tmp_path, monkeypatch)
    assert main(["docker", "--docker-host", "ssh://me@vm"]) == 2
    assert capsys.readouterr().err.startswith("dmnc: ")
