from __future__ import annotations

import subprocess
import sys

import pytest

from dmnc import __version__
from dmnc.cli import main


def test_version_flag_prints_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"dmnc {__version__}"


def test_version_command_prints_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"dmnc {__version__}"


def test_unknown_flag_is_a_usage_error_without_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dmnc", "--no-such-flag"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [["version"], ["--version"]])
def test_version_loads_none_of_the_heavy_libraries(argv: list[str]) -> None:
    """Cold start of `dmnc version` is a packaging target (<= 0.5 s): only the named command's module is imported."""
    probe = (
        "import sys\nfrom dmnc.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('trio', 'httpx', 'nacl', 'dmnc.tunnel.datapath') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[]"
