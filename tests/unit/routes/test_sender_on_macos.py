"""Naming the process that changed a route on macOS, which has no /proc: `ps -o comm= -p PID`, faked on PATH."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmnc.routes.reconcile import describe_sender

FAKE_PS = """#!/bin/sh
# ps(1) as macOS answers `ps -o comm= -p PID`: the command's path, or nothing and exit 1 for a gone process.
[ "$1 $2 $3" = "-o comm= -p" ] || exit 64
case "$4" in
    4242) echo "/Applications/Some VPN.app/Contents/MacOS/vpnd" ;;
    666) printf 'evil\\033[2Jname\\n' ;;
    *) exit 1 ;;
esac
"""


@pytest.fixture
def fake_ps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ps = tmp_path / "ps"
    ps.write_text(FAKE_PS)
    ps.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")


@pytest.mark.usefixtures("fake_ps")
def test_sender_is_named_by_ps_where_there_is_no_proc() -> None:
    assert describe_sender(4242, platform="darwin") == "pid 4242 (/Applications/Some VPN.app/Contents/MacOS/vpnd)"


@pytest.mark.usefixtures("fake_ps")
def test_a_gone_process_is_its_pid_and_a_hostile_name_is_escaped() -> None:
    assert describe_sender(31337, platform="darwin") == "pid 31337"
    assert describe_sender(666, platform="darwin") == "pid 666 (evil\\x1b[2Jname)"


def test_without_ps_the_pid_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert describe_sender(4242, platform="darwin") == "pid 4242"
