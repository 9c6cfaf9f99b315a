"""The PyInstaller build (build/build_binary.sh) yields one executable that runs without the source tree and carries
every library and data file dmnc needs.

The build takes about half a minute on 2 cores. It uses the pinned build venv that tests/run makes before the tests
(in tests/.cache, `build/build_binary.sh venv`) and never installs anything itself, so no test depends on a package
registry; without that venv the tests skip, or fail in CI. The build goes to a temporary directory unless
DMNC_BUILD_OUT names one.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dmnc import __version__
from dmnc.cli import COMMAND_MODULES
from dmnc.system_service import LAUNCHD_LABEL, ServiceSpec, launchd_plist, systemd_unit
from dmnc.wireguard.keys import decode_key, encode_key, public_key
from tests.conftest import require_lab, require_root, require_tools
from tests.integration.service.test_dns import DOMAIN, FIRST_ANSWER_TIMEOUT_S, dig, start_named_web
from tests.lab.dockerd import running_dockerd
from tests.lab.service_lab import (
    ServiceLab,
    create_network,
    dmnc_routes,
    http_get,
    running_dmnc,
    start_web_container,
    status_json,
)
from tests.lab.wait import wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO / "build" / "build_binary.sh"
BUILD_TIMEOUT_S = 900
# Where tests/run makes the build venv (its DMNC_BUILD_VENVS).
VENV_CACHE = REPO / "tests" / ".cache"
# build_binary.sh's exit status when DMNC_BUILD_VENV_PREBUILT is set and the build venv is missing.
EXIT_BUILD_VENV_MISSING = 3


@dataclass(frozen=True)
class FrozenBuild:
    executable: Path
    build_venv_bin: Path


@pytest.fixture(scope="session")
def frozen_build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrozenBuild]:
    require_tools("bash")
    given_out = os.environ.get("DMNC_BUILD_OUT")
    out = Path(given_out) if given_out else tmp_path_factory.mktemp("dmnc-build")
    environment = {
        **os.environ,
        "DMNC_BUILD_OUT": str(out),
        "DMNC_BUILD_VENVS": str(VENV_CACHE),
        "DMNC_BUILD_VENV_PREBUILT": "1",
        "PYTHON": sys.executable,
    }
    venv = subprocess.run(
        [str(BUILD_SCRIPT), "venv"], env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    require_lab(
        venv.returncode != EXIT_BUILD_VENV_MISSING,
        f"the pinned build venv, made by tests/run before the tests ({venv.stderr.strip()})",
    )
    assert venv.returncode == 0, f"build/build_binary.sh venv failed:\n{venv.stdout}\n{venv.stderr}"
    result = subprocess.run(
        [str(BUILD_SCRIPT), "onefile"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    yield FrozenBuild(executable=out / "dist-onefile" / "dmnc", build_venv_bin=out / "venv" / "bin")
    if not given_out:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def detached_binary(frozen_build: FrozenBuild, tmp_path: Path) -> Path:
    """The binary copied away from the checkout and its build directory, as a user downloads it."""
    copy = tmp_path / "bin" / "dmnc"
    copy.parent.mkdir()
    shutil.copy2(frozen_build.executable, copy)
    return copy


def run_frozen(executable: Path, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH, no venv, a directory without sources: the binary must bring everything itself.
    environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(executable), *argv],
        input=stdin,
        env=environment,
        cwd=executable.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_frozen_binary_reports_the_package_version(detached_binary: Path) -> None:
    for argv in (["--version"], ["version"]):
        result = run_frozen(detached_binary, *argv)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"dmnc {__version__}\n"


def test_frozen_binary_writes_the_same_service_files_as_the_source(detached_binary: Path, tmp_path: Path) -> None:
    spec = ServiceSpec(program_arguments=("/usr/local/bin/dmnc", "--log-level", "debug"))
    staging = ["--root", str(tmp_path), "--executable", "/usr/local/bin/dmnc"]
    for manager in ("systemd", "launchd"):
        result = run_frozen(
            detached_binary, "service", "install", *staging, "--manager", manager, "--", "--log-level", "debug"
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "etc/systemd/system/dmnc.service").read_text() == systemd_unit(spec)
    plist = (tmp_path / "Library/LaunchDaemons" / f"{LAUNCHD_LABEL}.plist").read_bytes()
    assert plist == launchd_plist(spec)
    assert plistlib.loads(plist)["ProgramArguments"][0] == "/usr/local/bin/dmnc"


def test_frozen_binary_service_install_defaults_to_running_itself(detached_binary: Path, tmp_path: Path) -> None:
    result = run_frozen(detached_binary, "service", "install", "--root", str(tmp_path), "--manager", "systemd")
    assert result.returncode == 0, result.stderr
    unit = (tmp_path / "etc/systemd/system/dmnc.service").read_text()
    assert f"\nExecStart={detached_binary}\n" in unit


def test_frozen_binary_turns_bad_flags_into_usage_errors(detached_binary: Path) -> None:
    result = run_frozen(detached_binary, "--no-such-flag")
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr
    assert "Traceback" not in result.stderr


def archive_contents(frozen_build: FrozenBuild) -> set[str]:
    """File names and module names inside the onefile archive and its embedded module archive."""
    listing = subprocess.run(
        [
            str(frozen_build.build_venv_bin / "pyi-archive_viewer"),
            "--recursive",
            "--brief",
            str(frozen_build.executable),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {line.strip() for line in listing.stdout.splitlines()}


def test_frozen_binary_carries_package_data_and_compiled_libraries(frozen_build: FrozenBuild) -> None:
    contents = archive_contents(frozen_build)
    package_data = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "dmnc").rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    }
    assert "dmnc/vm/setup.sh" in package_data or not (REPO / "dmnc/vm/setup.sh").exists()
    assert package_data <= contents, f"package data missing from the binary: {sorted(package_data - contents)}"
    sodium = {name for name in contents if re.fullmatch(r"nacl/_sodium\..*(so|pyd)", name)}
    assert sodium, "PyNaCl's compiled libsodium module is missing"
    assert any(name.startswith("_cffi_backend") for name in contents), "cffi's backend is missing"
    assert "certifi/cacert.pem" in contents
    for module in ("trio", "trio_websocket", "httpx", "anyio._backends._trio", "nacl.bindings", *COMMAND_MODULES):
        assert module in contents, f"module {module} is missing"
    # dnspython imports its record types by name when it reads or writes one; jeepney's trio I/O talks to resolved.
    dns_modules = ("dns.message", "dns.rdtypes.IN.A", "dns.rdtypes.IN.AAAA", "dns.rdtypes.ANY.SOA")
    for module in (*dns_modules, "jeepney", "jeepney.io.trio", "dmnc.dns.resolved", "dmnc.dns.answer_cache"):
        assert module in contents, f"module {module} is missing"


def test_frozen_binary_makes_and_derives_wireguard_keys(detached_binary: Path) -> None:
    """Runs libsodium (X25519) through PyNaCl's compiled module inside the frozen binary."""
    private = run_frozen(detached_binary, "wg", "genkey")
    assert private.returncode == 0, private.stderr
    derived = run_frozen(detached_binary, "wg", "pubkey", stdin=private.stdout)
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout.strip() == encode_key(public_key(decode_key(private.stdout.strip())))


def test_frozen_binary_status_reports_a_missing_service_cleanly(detached_binary: Path, tmp_path: Path) -> None:
    """Loads trio and trio-websocket inside the frozen binary and runs the status client up to its socket."""
    result = run_frozen(detached_binary, "status", "--control-socket", str(tmp_path / "absent.sock"))
    assert result.returncode == 3, result.stderr  # dmnc.commands.status: EXIT_NOT_RUNNING
    assert "Traceback" not in result.stderr


def test_frozen_binary_talks_to_a_real_docker_engine(detached_binary: Path) -> None:
    """httpx over the Unix socket under trio (anyio's trio backend is imported by name at run time) in the binary."""
    require_root()
    require_tools("ip", "dockerd")
    with running_dockerd() as engine:
        result = run_frozen(detached_binary, "docker", "--docker-host", f"unix://{engine.socket_path}")
    assert result.returncode == 0, result.stderr
    assert f"daemon: unix://{engine.socket_path}" in result.stdout
    assert "Traceback" not in result.stderr


def test_frozen_binary_reaches_a_container_by_ip(detached_binary: Path, own_service_lab: ServiceLab) -> None:
    """The product as users get it: the one-file binary, run as `dmnc run`, makes a container answer by its IP."""
    address = start_web_container(own_service_lab)
    with running_dmnc(own_service_lab, "--path", "tunnel", command=[str(detached_binary)]) as dmnc:
        seconds = http_get(own_service_lab, address)
        assert dmnc.stop() == 0
    print(f"frozen binary: container answered {seconds:.1f} s after the first try")
    assert dmnc_routes(own_service_lab) == []
    assert "Traceback" not in dmnc.log()


def test_frozen_binary_answers_container_names(detached_binary: Path, service_lab: ServiceLab) -> None:
    """dnspython (record types imported by name at run time) and jeepney (the systemd-resolved link, which finds no
    bus in the lab and says so) inside the frozen binary: `dmnc run` answers a container's name over UDP and TCP."""
    require_tools("dig")
    create_network(service_lab, "frozen-dns", "172.31.10.0/24")
    address = start_named_web(service_lab, "frozendns", "frozen-dns")
    name = f"frozendns.{DOMAIN}"
    with running_dmnc(service_lab, "--path", "tunnel", command=[str(detached_binary)]) as dmnc:
        wait_until(lambda: dig(service_lab, name).answers == [address], FIRST_ANSWER_TIMEOUT_S, "name resolved")
        over_tcp = dig(service_lab, name, tcp=True)
        assert (over_tcp.status, over_tcp.answers) == ("NOERROR", [address])
        nodata = dig(service_lab, name, "AAAA")
        assert (nodata.status, nodata.answers, nodata.authority_types) == ("NOERROR", [], ["SOA"])
        assert dig(service_lab, f"nosuch.{DOMAIN}").status == "NXDOMAIN"
        assert dig(service_lab, "example.com").status == "REFUSED"
        # jeepney ran: the resolved integration configured the link or says why it could not (no system bus here).
        host_resolver = status_json(service_lab)["dns"]["host_resolver"]
        assert "systemd-resolved" in host_resolver, host_resolver
        assert dmnc.stop() == 0
    assert "Traceback" not in dmnc.log()
