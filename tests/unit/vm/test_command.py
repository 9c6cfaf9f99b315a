"""`dmnc vm teardown|image`: argument parsing and the configuration they read."""

from __future__ import annotations

import pytest

from dmnc.cli import build_parser
from dmnc.commands.vm import run_image, run_teardown


def test_vm_actions_parse_docker_host_setup_image_and_config() -> None:
    args = build_parser().parse_args(
        ["vm", "teardown", "--docker-host", "unix:///tmp/x.sock", "--setup-image", "ref:1", "--config", "/c.toml"]
    )
    assert args.handler is run_teardown
    assert (args.docker_host, args.setup_image, args.config_file) == ("unix:///tmp/x.sock", "ref:1", "/c.toml")
    assert build_parser().parse_args(["vm", "image"]).handler is run_image


def test_bad_docker_host_is_a_configuration_error_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["vm", "teardown", "--docker-host", "ftp://nope"])
    assert args.handler(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("dmnc: ")
    assert error.count("\n") == 1
