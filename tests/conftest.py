"""Shared test configuration.

Lab prerequisites (root, tools, kernel features) are checked with `require_lab`: outside CI a missing one skips the
test with the reason; in CI (CI=true) it fails the run, so a green CI always means the lab tests really ran.

The service lab's fixtures (`service_lab`, one lab shared by a module's tests and reset after each; `own_service_lab`)
come from tests/lab/service_lab.py, registered below for the whole suite.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest
from hypothesis import settings

# No per-example deadline: a property test asserts what the code does, never how fast. On a loaded 2-core machine
# (CI runs the lab tests beside the unit tests) hypothesis's default 200 ms deadline fails correct code at random.
settings.register_profile("dmnc", deadline=None)
settings.load_profile("dmnc")

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_lab(condition: bool, what: str) -> None:
    """Skip (locally) or fail (in CI) when a lab prerequisite named by `what` is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"lab prerequisite missing in CI: {what}")
    pytest.skip(f"lab prerequisite missing: {what}")


def require_root() -> None:
    require_lab(os.geteuid() == 0, "root (run tests/run as root)")


def require_tools(*tools: str) -> None:
    for tool in tools:
        require_lab(shutil.which(tool) is not None, f"the `{tool}` command (tests/lab/install.sh installs it)")


def dmnc_command() -> list[str]:
    """How tests run the `dmnc` command: the frozen binary named by DMNC_EXECUTABLE (CI's binary job), else this
    source tree's package with the test interpreter."""
    executable = os.environ.get("DMNC_EXECUTABLE")
    return [executable] if executable else [sys.executable, "-m", "dmnc"]


pytest_plugins = ["tests.lab.service_lab"]
