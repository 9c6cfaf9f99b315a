"""The service files and the formula pass their platforms' own checkers: systemd-analyze, an XML DTD check of the
plist (plutil -lint runs in the macOS CI job), ruby -c."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dmnc.system_service import LAUNCHD_LABEL
from tests.conftest import require_tools

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[3]
PLIST_DTD = Path(__file__).with_name("plist-1.0.dtd")
FORMULA = REPO / "build" / "homebrew" / "dmnc.rb"


def dmnc(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dmnc", *argv], capture_output=True, text=True, check=False)


def staged_install(root: Path, *argv: str) -> None:
    result = dmnc("service", "install", "--root", str(root), *argv)
    assert result.returncode == 0, result.stderr


def systemd_verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)


def test_installed_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    require_tools("systemd-analyze")
    # Arguments that need systemd quoting and escaping of its % specifiers and $ variables.
    staged_install(
        tmp_path, "--manager", "systemd", "--executable", sys.executable, "--", "--config", "/etc/a b%$X.toml"
    )
    unit = tmp_path / "etc/systemd/system/dmnc.service"
    result = systemd_verify(unit)
    assert result.returncode == 0, result.stderr
    assert "dmnc.service" not in result.stderr


def test_systemd_analyze_verify_rejects_a_unit_whose_program_is_missing(tmp_path: Path) -> None:
    """Shows the check above can fail: verify looks at ExecStart, not only at the syntax."""
    require_tools("systemd-analyze")
    staged_install(tmp_path, "--manager", "systemd", "--executable", str(tmp_path / "no-such-dmnc"))
    result = systemd_verify(tmp_path / "etc/systemd/system/dmnc.service")
    assert result.returncode != 0
    assert "no-such-dmnc is not executable" in result.stderr


def xmllint_plist(plist: Path) -> subprocess.CompletedProcess[str]:
    # --nonet: the DOCTYPE names Apple's DTD by URL; the structure is checked against the local copy instead.
    return subprocess.run(
        ["xmllint", "--nonet", "--noout", "--dtdvalid", str(PLIST_DTD), str(plist)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_installed_launchd_plist_is_a_valid_property_list(tmp_path: Path) -> None:
    require_tools("xmllint")
    staged_install(
        tmp_path, "--manager", "launchd", "--executable", "/usr/local/bin/dmnc", "--", "--config", "/etc/<&>é"
    )
    plist = tmp_path / "Library/LaunchDaemons" / f"{LAUNCHD_LABEL}.plist"
    result = xmllint_plist(plist)
    assert result.returncode == 0, result.stderr
    assert "validity error" not in result.stderr


def test_plist_check_rejects_a_dict_with_a_key_missing_its_value(tmp_path: Path) -> None:
    """Shows the check above can fail: a structurally broken plist that is still well-formed XML."""
    require_tools("xmllint")
    staged_install(tmp_path, "--manager", "launchd", "--executable", "/usr/local/bin/dmnc")
    plist = tmp_path / "Library/LaunchDaemons" / f"{LAUNCHD_LABEL}.plist"
    broken = tmp_path / "broken.plist"
    broken.write_text(plist.read_text().replace("<true/>", "", 1))
    result = xmllint_plist(broken)
    assert result.returncode != 0
    assert "Element dict content does not follow the DTD" in result.stderr


def ruby_syntax(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ruby", "-c", str(path)], capture_output=True, text=True, check=False)


def test_formula_template_and_a_rendered_formula_pass_ruby_syntax_check(tmp_path: Path) -> None:
    require_tools("ruby")
    assert ruby_syntax(FORMULA).stdout.strip() == "Syntax OK"
    tarball = tmp_path / "dmnc-1.2.3.tar.gz"
    tarball.write_bytes(b"release tarball")
    rendered = subprocess.run(
        [
            sys.executable,
            str(REPO / "build/homebrew/render_formula.py"),
            "--repository",
            "example-org/dmnc",
            "--version",
            "1.2.3",
            "--sdist",
            str(tarball),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    formula = tmp_path / "dmnc.rb"
    formula.write_text(rendered.stdout)
    result = ruby_syntax(formula)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Syntax OK"


def test_ruby_syntax_check_rejects_a_broken_formula(tmp_path: Path) -> None:
    """Shows the check above can fail: a formula with an unclosed block."""
    require_tools("ruby")
    broken = tmp_path / "dmnc.rb"
    broken.write_text(FORMULA.read_text().replace("  service do\n", "  service do\n    if true\n", 1))
    assert ruby_syntax(broken).returncode != 0
