"""Put the fake `launchctl` (tests/fakes/launchctl.py) first on PATH and read back what it saw."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

LAUNCHCTL_SCRIPT = Path(__file__).with_name("launchctl.py")


class FakeLaunchd:
    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch, *, exit_s: float, cleanup_s: float) -> None:
        bin_dir = directory / "bin"
        bin_dir.mkdir()
        launchctl = bin_dir / "launchctl"
        launchctl.write_text(f'#!/bin/sh\nexec {sys.executable} {LAUNCHCTL_SCRIPT} "$@"\n')
        launchctl.chmod(0o755)
        self.state_path = directory / "launchctl-state.json"
        monkeypatch.setenv("PATH", f"{bin_dir}:{Path('/usr/bin')}:{Path('/bin')}")
        monkeypatch.setenv("FAKE_LAUNCHCTL_STATE", str(self.state_path))
        monkeypatch.setenv("FAKE_LAUNCHCTL_EXIT_S", str(exit_s))
        monkeypatch.setenv("FAKE_LAUNCHCTL_CLEANUP_S", str(cleanup_s))

    def set_loaded(self) -> None:
        self.state_path.write_text(json.dumps({"loaded": True}))

    @property
    def loaded(self) -> bool:
        return bool(json.loads(self.state_path.read_text()).get("loaded", False))

    @property
    def calls(self) -> list[list[str]]:
        calls: list[list[str]] = json.loads(self.state_path.read_text())["calls"]
        return calls
