"""`dmnc` / `dmnc run` as a subprocess: the messages and exit codes a user sees before the service starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmnc.commands.run import NOT_ROOT_MESSAGE
from tests.conftest import require_root
from tests.integration.control.helpers import dmnc_as_nobody, run_dmnc

pytestmark = pytest.mark.lab


@pytest.fixture
def empty_config(tmp_path: Path) -> str:
    path = tmp_path / "config.toml"
    path.write_text("", encoding="utf-8")
    return str(path)


async def test_not_root_is_refused_before_anything_else() -> None:
    result = await dmnc_as_nobody("--listen", "127.0.0.1")
    assert result.returncode == 1
    assert result.stderr == NOT_ROOT_MESSAGE + "\n"
    assert result.stdout == ""


async def test_bad_flag_value_is_named_with_exit_code_2(empty_config: str) -> None:
    require_root()
    result = await run_dmnc("--config", empty_config, "--listen", "[::1]:99999")
    assert result.returncode == 2
    assert result.stderr == "dmnc: --listen: port 99999 is not in 0-65535\n"


async def test_unknown_flag_is_a_usage_error() -> None:
    result = await run_dmnc("--listne", "0.0.0.0")
    assert result.returncode == 2
    assert "unrecognized arguments: --listne" in result.stderr
    assert "Traceback" not in result.stderr
