"""The embedded VM-side script is portable POSIX sh: shellcheck finds nothing, and dash and busybox ash parse it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tools

pytestmark = pytest.mark.lab

SCRIPT = Path(__file__).resolve().parents[3] / "dmnc" / "vm" / "setup.sh"


def test_shellcheck_finds_nothing_in_posix_mode() -> None:
    require_tools("shellcheck")
    completed = subprocess.run(
        ["shellcheck", "--shell=sh", "--severity=info", str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stdout


@pytest.mark.parametrize("shell", [["dash"], ["busybox", "sh"]])
def test_the_shells_of_the_setup_images_parse_it(shell: list[str]) -> None:
    # dash: the lab image and Debian-based images; busybox ash: the Alpine image built from dmnc/vm/Dockerfile.
    require_tools(shell[0])
    completed = subprocess.run([*shell, "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
