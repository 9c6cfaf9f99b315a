"""launchd stops a daemon asynchronously: install over a running service and uninstall must wait for it.

Driven through the real `apply` and `subprocess`, against tests/fakes/launchctl.py on PATH.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dmnc.system_service import (
    LAUNCHD_LABEL,
    ServiceError,
    ServiceManager,
    ServiceSpec,
    Waiting,
    WaitUntilUnloaded,
    apply,
    plan_install,
    plan_uninstall,
)
from tests.fakes.launchd import FakeLaunchd

SPEC = ServiceSpec(program_arguments=("/usr/local/bin/dmnc",))
FAST = Waiting(interval_s=0.05)
# How long the fake daemon takes to exit after SIGTERM and launchd to clean up after it: long enough that an
# immediate bootstrap or an immediate "is it gone?" sees it, short enough for a unit test.
EXIT_S = 0.6
CLEANUP_S = 0.4


@pytest.fixture
def launchd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLaunchd:
    return FakeLaunchd(tmp_path, monkeypatch, exit_s=EXIT_S, cleanup_s=CLEANUP_S)


def test_install_over_a_running_service_waits_for_the_old_daemon_and_loads_the_new(
    tmp_path: Path, launchd: FakeLaunchd
) -> None:
    launchd.set_loaded()
    actions = plan_install(ServiceManager.LAUNCHD, SPEC, root=tmp_path / "root", activate=True, chown=False)
    started = time.monotonic()
    report = apply(actions, waiting=FAST)
    assert time.monotonic() - started >= EXIT_S, "bootstrap ran before the old daemon had exited"
    assert launchd.loaded, report
    commands = [call[0] for call in launchd.calls]
    assert commands[0] == "bootout"
    assert commands.index("print") < commands.index("bootstrap")
    assert report[-1].startswith(f"ran launchctl bootstrap system /Library/LaunchDaemons/{LAUNCHD_LABEL}.plist")


def test_first_install_bootstraps_at_once(tmp_path: Path, launchd: FakeLaunchd) -> None:
    report = apply(plan_install(ServiceManager.LAUNCHD, SPEC, root=tmp_path / "root", activate=True, chown=False))
    assert launchd.loaded
    assert "ignored: Boot-out failed: 3" in report[2]
    assert report[-1] == f"ran launchctl bootstrap system /Library/LaunchDaemons/{LAUNCHD_LABEL}.plist"


def test_uninstall_returns_only_once_launchd_has_unloaded_the_daemon(tmp_path: Path, launchd: FakeLaunchd) -> None:
    launchd.set_loaded()
    report = apply(plan_uninstall(ServiceManager.LAUNCHD, root=tmp_path / "root", activate=True), waiting=FAST)
    assert any(line.startswith(f"launchd has unloaded system/{LAUNCHD_LABEL}") for line in report)
    assert launchd.calls[-1] == ["print", f"system/{LAUNCHD_LABEL}"]
    assert not launchd.loaded


def test_a_daemon_that_never_exits_is_a_bounded_wait_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launchd = FakeLaunchd(tmp_path, monkeypatch, exit_s=60, cleanup_s=0)
    launchd.set_loaded()
    apply([*plan_uninstall(ServiceManager.LAUNCHD, root=tmp_path, activate=True)[:1]])
    started = time.monotonic()
    with pytest.raises(ServiceError, match=r"still loaded 0\.3 s after bootout"):
        apply([WaitUntilUnloaded(LAUNCHD_LABEL, 0.3)], waiting=FAST)
    assert time.monotonic() - started < 5


def test_bootstrap_gives_up_on_a_lasting_failure(tmp_path: Path, launchd: FakeLaunchd) -> None:
    launchd.set_loaded()  # loaded and never booted out: bootstrap keeps failing with 37
    actions = plan_install(ServiceManager.LAUNCHD, SPEC, root=tmp_path / "root", activate=True, chown=False)
    bootstrap = actions[-1]
    fast_clock = iter(range(1000))
    with pytest.raises(ServiceError, match=r"failed with exit 37 after \d+ tries: Bootstrap failed: 37"):
        apply([bootstrap], waiting=Waiting(clock=lambda: float(next(fast_clock)), sleep=lambda _: None))
