"""The systemd unit `dmnc service install` writes, as systemd's own tools judge it: exposure score and syntax.

systemd is not PID 1 in the lab, so the restrictions themselves are exercised by
tests/integration/service/test_least_privilege.py with setpriv, prlimit and a mount namespace.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tools

pytestmark = pytest.mark.lab

# The bar issue 18 sets; Debian 12's systemd-networkd.service, also a root network daemon, scores 2.8.
MAX_EXPOSURE = 4.5
INSTALL = (sys.executable, "-m", "dmnc", "service", "install")
_OVERALL = re.compile(r"Overall exposure level for dmnc\.service: ([0-9.]+)")


def installed_unit(root: Path) -> Path:
    result = subprocess.run(
        [*INSTALL, "--root", str(root), "--manager", "systemd", "--executable", sys.executable],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return root / "etc/systemd/system/dmnc.service"


def test_systemd_analyze_security_rates_the_unit_at_most_4_5(tmp_path: Path) -> None:
    require_tools("systemd-analyze")
    unit = installed_unit(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = _OVERALL.search(result.stdout)
    assert found is not None, result.stdout + result.stderr
    print(f"systemd-analyze security: {found.group(1)}")
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


def test_the_hardened_unit_still_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    require_tools("systemd-analyze")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(installed_unit(tmp_path))], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "dmnc.service" not in result.stderr
