"""The shipping files stay consistent with the code and with each other (build/, Homebrew formula, pins)."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dmnc.system_service import LAUNCHD_LABEL, ServiceSpec, launchd_plist, systemd_unit

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"
FORMULA = BUILD / "homebrew" / "dmnc.rb"
SHA256 = "0123456789abcdef" * 4


def load_render_formula() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_formula", BUILD / "homebrew" / "render_formula.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_formula = load_render_formula()


def lock_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (BUILD / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line!r} is not an exact pin"
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


BUILD_ONLY = {"pyinstaller", "pyinstaller-hooks-contrib", "altgraph", "packaging", "setuptools", "macholib"}


def formula_resources() -> dict[str, str]:
    """resource name -> version, from each resource's sdist file name."""
    resources: dict[str, str] = {}
    for name, url in re.findall(r'resource "([^"]+)" do\n\s+url "([^"]+)"', FORMULA.read_text()):
        filename = url.rsplit("/", 1)[1]
        match = re.fullmatch(r"(.+)-([^-]+)\.tar\.gz", filename)
        assert match is not None, f"resource {name}: {filename} is not an sdist"
        assert canonicalize_name(match.group(1)) == canonicalize_name(name)
        resources[canonicalize_name(name)] = match.group(2)
    return resources


def test_checked_in_service_templates_are_what_dmnc_service_install_writes() -> None:
    spec = ServiceSpec(program_arguments=("/usr/local/bin/dmnc",))
    assert (BUILD / "service" / "dmnc.service").read_text() == systemd_unit(spec)
    assert (BUILD / "service" / f"{LAUNCHD_LABEL}.plist").read_bytes() == launchd_plist(spec)


def test_formula_resources_are_exactly_the_locked_runtime_libraries() -> None:
    runtime = {name: version for name, version in lock_pins().items() if name not in BUILD_ONLY}
    assert formula_resources() == runtime


def test_locked_runtime_libraries_satisfy_the_package_dependencies() -> None:
    pins = lock_pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a dependency but not in build/requirements.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} violates {line!r}"


def test_formula_template_carries_every_placeholder() -> None:
    template = FORMULA.read_text()
    for placeholder in render_formula.PLACEHOLDERS:
        assert placeholder in template


def test_render_fills_the_release_values() -> None:
    formula = render_formula.render(
        FORMULA.read_text(), repository="example-org/dmnc", version="1.2.3", sdist_sha256=SHA256
    )
    assert not [placeholder for placeholder in render_formula.PLACEHOLDERS if placeholder in formula]
    assert 'url "https://github.com/example-org/dmnc/releases/download/v1.2.3/dmnc-1.2.3.tar.gz"' in formula
    assert f'sha256 "{SHA256}"' in formula


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("repository", 'evil"; system "rm'),
        ("repository", "no-slash"),
        ("repository", "owner/.."),
        ("version", "1.0 beta"),
        ("version", "v1.0"),
        ("sdist_sha256", "ABC"),
    ],
)
def test_render_rejects_values_that_do_not_belong_in_a_formula(field: str, value: str) -> None:
    values = {"repository": "example-org/dmnc", "version": "1.2.3", "sdist_sha256": SHA256, field: value}
    with pytest.raises(render_formula.RenderError):
        render_formula.render(FORMULA.read_text(), **values)


@given(st.text(max_size=30))
def test_rendered_values_never_contain_ruby_string_syntax(text: str) -> None:
    template = FORMULA.read_text()
    for field in ("repository", "version"):
        values = {"repository": "example-org/dmnc", "version": "1.2.3", "sdist_sha256": SHA256, field: text}
        try:
            formula = render_formula.render(template, **values)
        except render_formula.RenderError:
            continue
        assert not set(text) & set('"\\#{}\n'), f"{text!r} was accepted as {field}"
        assert formula.count('"') == template.count('"')


def test_render_formula_command_reports_a_missing_tarball(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "dmnc-1.2.3.tar.gz"
    argv = ["--repository", "example-org/dmnc", "--version", "1.2.3", "--sdist", str(missing)]
    assert render_formula.main(argv) == 1
    assert capsys.readouterr().err == f"render_formula: cannot read {missing}: No such file or directory\n"


def test_render_formula_command_prints_the_formula(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tarball = tmp_path / "dmnc-1.2.3.tar.gz"
    tarball.write_bytes(b"")
    argv = ["--repository", "example-org/dmnc", "--version", "1.2.3", "--sdist", str(tarball)]
    assert render_formula.main(argv) == 0
    empty_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert f'sha256 "{empty_sha256}"' in capsys.readouterr().out
