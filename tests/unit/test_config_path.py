"""The `path` option: flag > environment > file, auto by default, a clear error for anything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.config import ConfigError, ConfigFlags, PathOption, ValueProblem, load_config, parse_path


@pytest.fixture(autouse=True)
def no_default_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dmnc.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


def test_path_is_auto_unless_given_and_the_flag_beats_the_environment_beats_the_file(tmp_path: Path) -> None:
    assert load_config(ConfigFlags(), {}).path is PathOption.AUTO
    config_file = tmp_path / "config.toml"
    config_file.write_text('path = "direct"\n', encoding="utf-8")
    environ = {"DMNC_CONFIG": str(config_file)}
    assert load_config(ConfigFlags(), environ).path is PathOption.DIRECT
    assert load_config(ConfigFlags(), {**environ, "DMNC_PATH": "tunnel"}).path is PathOption.TUNNEL
    assert load_config(ConfigFlags(path="auto"), {**environ, "DMNC_PATH": "tunnel"}).path is PathOption.AUTO


def test_a_bad_path_names_its_source_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"DMNC_PATH.*'sideways' is not a path; expected auto, tunnel or direct"):
        load_config(ConfigFlags(), {"DMNC_PATH": "sideways"})


@settings(deadline=None)
@given(st.text(max_size=20))
def test_any_text_is_a_path_option_or_a_value_problem(text: str) -> None:
    try:
        option = parse_path(text)
    except ValueProblem:
        assert text.strip().lower() not in {"auto", "tunnel", "direct"}
    else:
        assert option.value == text.strip().lower()
