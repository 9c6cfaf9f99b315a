from __future__ import annotations

import os
import plistlib
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmnc.cli import main
from dmnc.docker.address import DaemonAddress
from dmnc.system_service import (
    LAUNCHD_BOOTSTRAP_RETRY_S,
    LAUNCHD_LABEL,
    LAUNCHD_LOG_PATH,
    LAUNCHD_UNLOAD_WAIT_S,
    SERVICE_CAPABILITIES,
    Action,
    MakeDirectory,
    RemoveFile,
    RetryingCommand,
    RunCommand,
    ServiceError,
    ServiceManager,
    ServiceSpec,
    WaitUntilUnloaded,
    WriteFile,
    apply,
    code_trust_problems,
    current_command,
    launchd_plist,
    plan_install,
    plan_uninstall,
    service_code_paths,
    systemd_quote,
    systemd_unit,
)

# Printable text, including everything systemd treats specially: quotes, backslash, `%` specifiers, `$` variables.
service_arguments = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x85\u2028\u2029\ufffe\uffff"),
    max_size=40,
)


def systemd_split(command_line: str) -> list[str]:
    """systemd's splitting of an ExecStart= line (systemd.service(5) "Command lines"), as far as dmnc emits it:
    plain words, double-quoted words with backslash escapes, `%%` and `$$` unescaped to `%` and `$`."""
    words: list[str] = []
    position = 0
    while position < len(command_line):
        if command_line[position] == " ":
            position += 1
            continue
        word: list[str] = []
        if command_line[position] == '"':
            position += 1
            while command_line[position] != '"':
                if command_line[position] == "\\":
                    position += 1
                word.append(command_line[position])
                position += 1
            position += 1
            assert position == len(command_line) or command_line[position] == " ", "quote must end the word"
        else:
            while position < len(command_line) and command_line[position] != " ":
                assert command_line[position] not in "\"'\\", "special character outside quotes"
                word.append(command_line[position])
                position += 1
        text = "".join(word)
        assert "%" not in text.replace("%%", ""), "lone % would be expanded as a specifier"
        assert "$" not in text.replace("$$", ""), "lone $ would be expanded as a variable"
        words.append(text.replace("%%", "%").replace("$$", "$"))
    return words


def unit_settings(unit: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in unit.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, value = line.split("=", 1)
        assert key not in current, f"{key} set twice"
        current[key] = value
    return sections


@given(st.lists(service_arguments, max_size=6))
def test_systemd_exec_start_round_trips_any_printable_arguments(arguments: list[str]) -> None:
    spec = ServiceSpec(program_arguments=("/usr/local/bin/dmnc", *arguments))
    exec_start = unit_settings(systemd_unit(spec))["Service"]["ExecStart"]
    assert systemd_split(exec_start) == list(spec.program_arguments)


@given(st.lists(service_arguments, max_size=6))
def test_launchd_program_arguments_round_trip_any_printable_arguments(arguments: list[str]) -> None:
    spec = ServiceSpec(program_arguments=("/opt/homebrew/bin/dmnc", *arguments))
    assert plistlib.loads(launchd_plist(spec))["ProgramArguments"] == list(spec.program_arguments)


@pytest.mark.parametrize("argument", ["\ufffe", "a\uffffb", "\ud800"])
def test_arguments_no_service_file_can_carry_are_refused(argument: str) -> None:
    with pytest.raises(ServiceError, match="no service file can carry"):
        ServiceSpec(program_arguments=("/usr/local/bin/dmnc", argument))


def test_plain_arguments_are_not_quoted() -> None:
    assert systemd_quote("--log-level=debug") == "--log-level=debug"
    assert systemd_quote("/usr/local/bin/dmnc") == "/usr/local/bin/dmnc"


def test_empty_argument_is_kept_as_empty_quotes() -> None:
    assert systemd_quote("") == '""'


@pytest.mark.parametrize("argument", ["a\nExecStartPre=/bin/sh", "tab\there", "nul\x00"])
def test_control_characters_cannot_reach_a_unit_file(argument: str) -> None:
    with pytest.raises(ServiceError, match="control character"):
        ServiceSpec(program_arguments=("/usr/bin/dmnc", argument))
    with pytest.raises(ServiceError, match="control character"):
        systemd_quote(argument)


def test_service_executable_must_be_absolute() -> None:
    with pytest.raises(ServiceError, match="absolute path"):
        ServiceSpec(program_arguments=("dmnc",))
    with pytest.raises(ServiceError, match="empty"):
        ServiceSpec(program_arguments=())


def test_systemd_unit_runs_dmnc_in_the_foreground_and_restarts_it() -> None:
    settings = unit_settings(systemd_unit(ServiceSpec(program_arguments=("/usr/local/bin/dmnc",))))
    assert settings["Service"]["ExecStart"] == "/usr/local/bin/dmnc"
    assert settings["Service"]["Type"] == "exec"
    assert settings["Service"]["Restart"] == "on-failure"
    assert settings["Service"]["ExecReload"] == "kill -HUP $MAINPID"
    assert settings["Install"]["WantedBy"] == "multi-user.target"
    assert "docker.service" in settings["Unit"]["After"]


def test_systemd_unit_keeps_only_the_capabilities_and_access_dmnc_uses() -> None:
    unit = systemd_unit(ServiceSpec(program_arguments=("/usr/local/bin/dmnc",)))
    service = unit_settings(unit)["Service"]
    assert service["CapabilityBoundingSet"].split() == list(SERVICE_CAPABILITIES)
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert service["DeviceAllow"] == "/dev/net/tun rw"
    assert service["SystemCallFilter"] == "@system-service"
    assert (service["ProtectHome"], service["UMask"], service["LimitCORE"]) == ("read-only", "0077", "0")
    assert service["ReadWritePaths"] == "/run"
    settings = [line.split("=", 1)[0] for line in unit.splitlines() if not line.startswith("#")]
    # Each would break dmnc (chown, capset, setrlimit, /proc/sys); the unit says why in a comment.
    assert "ProcSubset" not in settings
    assert "~@privileged" not in service["SystemCallFilter"]
    assert "~@resources" not in service["SystemCallFilter"]


def test_launchd_plist_is_a_kept_alive_root_daemon_logging_to_var_log() -> None:
    document = plistlib.loads(launchd_plist(ServiceSpec(program_arguments=("/usr/local/bin/dmnc",))))
    assert document == {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": ["/usr/local/bin/dmnc"],
        "RunAtLoad": True,
        "KeepAlive": True,
        "StandardOutPath": str(LAUNCHD_LOG_PATH),
        "StandardErrorPath": str(LAUNCHD_LOG_PATH),
        "EnvironmentVariables": {"TMPDIR": "/var/db/dmnc/tmp"},
    }


def test_manager_is_chosen_by_platform() -> None:
    assert ServiceManager.for_platform("linux") is ServiceManager.SYSTEMD
    assert ServiceManager.for_platform("darwin") is ServiceManager.LAUNCHD
    with pytest.raises(ServiceError, match="win32"):
        ServiceManager.for_platform("win32")


SPEC = ServiceSpec(program_arguments=("/usr/local/bin/dmnc",))


def test_real_systemd_install_writes_the_unit_then_enables_and_starts_it() -> None:
    actions = plan_install(ServiceManager.SYSTEMD, SPEC, root=Path("/"), activate=True)
    assert actions == [
        WriteFile(Path("/etc/systemd/system/dmnc.service"), systemd_unit(SPEC).encode(), 0o644, None),
        RunCommand(("systemctl", "daemon-reload")),
        RunCommand(("systemctl", "enable", "--now", "dmnc.service")),
    ]


def test_real_launchd_install_writes_a_root_wheel_plist_then_bootstraps_it() -> None:
    actions = plan_install(ServiceManager.LAUNCHD, SPEC, root=Path("/"), activate=True)
    plist_path = f"/Library/LaunchDaemons/{LAUNCHD_LABEL}.plist"
    assert actions == [
        MakeDirectory(Path("/var/db/dmnc/tmp"), 0o700, (0, 0)),
        WriteFile(Path(plist_path), launchd_plist(SPEC), 0o644, (0, 0)),
        RunCommand(("launchctl", "bootout", f"system/{LAUNCHD_LABEL}"), may_fail=True),
        WaitUntilUnloaded(LAUNCHD_LABEL, LAUNCHD_UNLOAD_WAIT_S),
        RunCommand(("launchctl", "enable", f"system/{LAUNCHD_LABEL}")),
        RetryingCommand(
            ("launchctl", "bootstrap", "system", plist_path),
            retry_exit_codes=frozenset({5, 37}),
            retry_for_s=LAUNCHD_BOOTSTRAP_RETRY_S,
        ),
    ]


def test_staged_install_only_writes_under_the_staging_root(tmp_path: Path) -> None:
    actions = plan_install(ServiceManager.LAUNCHD, SPEC, root=tmp_path, activate=False, chown=False)
    assert actions == [
        MakeDirectory(tmp_path / "var/db/dmnc/tmp", 0o700, None),
        WriteFile(tmp_path / "Library/LaunchDaemons" / f"{LAUNCHD_LABEL}.plist", launchd_plist(SPEC), 0o644, None),
    ]


def test_uninstall_stops_before_removing_and_tolerates_a_stopped_service() -> None:
    assert plan_uninstall(ServiceManager.SYSTEMD, root=Path("/"), activate=True) == [
        RunCommand(("systemctl", "disable", "--now", "dmnc.service"), may_fail=True),
        RemoveFile(Path("/etc/systemd/system/dmnc.service")),
        RunCommand(("systemctl", "daemon-reload")),
    ]
    assert plan_uninstall(ServiceManager.LAUNCHD, root=Path("/"), activate=True) == [
        RunCommand(("launchctl", "bootout", f"system/{LAUNCHD_LABEL}"), may_fail=True),
        WaitUntilUnloaded(LAUNCHD_LABEL, LAUNCHD_UNLOAD_WAIT_S),
        RemoveFile(Path(f"/Library/LaunchDaemons/{LAUNCHD_LABEL}.plist")),
    ]


@pytest.fixture
def strict_umask() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("strict_umask")
def test_apply_writes_files_with_the_planned_mode_despite_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "etc/systemd/system/dmnc.service"
    report = apply([WriteFile(target, b"[Unit]\n", 0o644, None)])
    assert report == [f"wrote {target} (7 bytes, mode 0644)"]
    assert target.read_bytes() == b"[Unit]\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert list(target.parent.iterdir()) == [target], "no temporary file is left behind"


def test_the_daemons_tmpdir_is_made_private_even_if_it_existed_open(tmp_path: Path) -> None:
    target = tmp_path / "var/db/dmnc/tmp"
    target.mkdir(parents=True, mode=0o777)
    target.chmod(0o777)
    assert apply([MakeDirectory(target, 0o700, None)]) == [f"made {target} (mode 0700)"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_a_symlink_in_place_of_the_tmpdir_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "tmp"
    target.symlink_to(elsewhere)
    with pytest.raises(ServiceError, match="exists and is not a directory"):
        apply([MakeDirectory(target, 0o700, None)])


def test_apply_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "dmnc.service"
    target.write_bytes(b"old")
    target.chmod(0o600)
    apply([WriteFile(target, b"new", 0o644, None)])
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_apply_reports_a_write_it_cannot_do(tmp_path: Path) -> None:
    blocker = tmp_path / "etc"
    blocker.write_bytes(b"a file where a directory should be")
    with pytest.raises(ServiceError, match=f"cannot write {blocker}/dmnc.service: "):
        apply([WriteFile(blocker / "dmnc.service", b"x", 0o644, None)])


def test_apply_reports_removed_and_missing_files(tmp_path: Path) -> None:
    target = tmp_path / "dmnc.service"
    target.write_bytes(b"x")
    assert apply([RemoveFile(target), RemoveFile(target)]) == [
        f"removed {target}",
        f"{target} was not installed: nothing to remove",
    ]


class FakeRunner:
    def __init__(self, results: dict[str, tuple[int, str]]) -> None:
        self.results = results
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        returncode, stderr = self.results.get(argv[0], (0, ""))
        return subprocess.CompletedProcess(list(argv), returncode, "", stderr)


def test_apply_ignores_an_allowed_failure_but_reports_it() -> None:
    runner = FakeRunner({"launchctl": (5, "Boot-out failed: 3: No such process\n")})
    report = apply([RunCommand(("launchctl", "bootout", "system/x"), may_fail=True)], runner=runner)
    assert report == ["ran launchctl bootout system/x (exit 5, ignored: Boot-out failed: 3: No such process)"]


def test_apply_stops_at_a_failing_command_and_says_what_was_done(tmp_path: Path) -> None:
    target = tmp_path / "dmnc.service"
    runner = FakeRunner({"systemctl": (1, "Failed to connect to bus: No such file or directory")})
    actions: list[Action] = [
        WriteFile(target, b"x", 0o644, None),
        RunCommand(("systemctl", "daemon-reload")),
        RemoveFile(target),
    ]
    with pytest.raises(ServiceError) as failure:
        apply(actions, runner=runner)
    message = str(failure.value)
    assert "systemctl daemon-reload failed with exit 1: Failed to connect to bus" in message
    assert f"done before the failure: wrote {target}" in message
    assert target.exists(), "actions after the failure are not carried out"


def test_apply_translates_a_missing_service_manager_into_a_service_error() -> None:
    def missing(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(ServiceError, match="cannot run systemctl: No such file or directory"):
        apply([RunCommand(("systemctl", "daemon-reload"))], runner=missing)


def test_current_command_of_a_frozen_binary_is_the_binary() -> None:
    assert current_command("/whatever", frozen=True) == (str(Path(sys.executable).absolute()),)


def test_current_command_keeps_the_script_symlink(tmp_path: Path) -> None:
    cellar = tmp_path / "Cellar/dmnc/0.1.0/bin/dmnc"
    cellar.parent.mkdir(parents=True)
    cellar.write_text("#!/bin/sh\n")
    link = tmp_path / "bin/dmnc"
    link.parent.mkdir()
    link.symlink_to(cellar)
    assert current_command(str(link), frozen=False) == (str(link),)


def test_current_command_falls_back_to_the_module(tmp_path: Path) -> None:
    assert current_command(str(tmp_path / "pytest"), frozen=False) == (
        str(Path(sys.executable).absolute()),
        "-m",
        "dmnc",
    )


def test_cli_staged_install_and_uninstall_report_what_they_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--root", str(tmp_path), "--manager", "launchd"]
    assert main(["service", "install", *argv, "--executable", "/usr/local/bin/dmnc", "--", "--log-level", "debug"]) == 0
    plist = tmp_path / "Library/LaunchDaemons" / f"{LAUNCHD_LABEL}.plist"
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"] == ["/usr/local/bin/dmnc", "--log-level", "debug"]
    assert f"wrote {plist}" in capsys.readouterr().out
    assert main(["service", "uninstall", *argv]) == 0
    assert f"removed {plist}\n" in capsys.readouterr().out
    assert not plist.exists()


def test_cli_dry_run_prints_the_file_and_commands_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["service", "install", "--dry-run", "--manager", "systemd", "--executable", "/usr/bin/dmnc"]) == 0
    out = capsys.readouterr().out
    assert "would write /etc/systemd/system/dmnc.service (mode 0644" in out
    assert "ExecStart=/usr/bin/dmnc\n" in out
    assert "would run systemctl enable --now dmnc.service" in out
    assert main(["service", "install", "--dry-run", "--root", str(tmp_path), "--executable", "/usr/bin/dmnc"]) == 0
    assert list(tmp_path.iterdir()) == []


def test_cli_real_install_needs_root(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sys, "platform", "linux")
    assert main(["service", "install", "--executable", "/usr/bin/dmnc"]) == 1
    assert (
        capsys.readouterr().err == "dmnc service install: needs root to write system service files: run it with sudo\n"
    )


def test_cli_refuses_to_install_another_platforms_service_for_real(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    assert main(["service", "uninstall", "--manager", "launchd"]) == 1
    assert "launchd is not this platform's service manager: use --root DIR or --dry-run" in capsys.readouterr().err


def test_cli_rejects_a_relative_executable_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["service", "install", "--dry-run", "--executable", "bin/dmnc"]) == 1
    assert "must be an absolute path" in capsys.readouterr().err


def test_cli_refuses_to_install_beside_homebrews_dmnc_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    homebrew_plist = tmp_path / "Library/LaunchDaemons/homebrew.mxcl.dmnc.plist"
    homebrew_plist.parent.mkdir(parents=True)
    homebrew_plist.write_bytes(b"")
    argv = ["service", "install", "--root", str(tmp_path), "--manager", "launchd", "--executable", "/usr/bin/dmnc"]
    assert main(argv) == 1
    assert f"Homebrew's dmnc service is installed ({homebrew_plist})" in capsys.readouterr().err
    assert sorted(path.name for path in homebrew_plist.parent.iterdir()) == ["homebrew.mxcl.dmnc.plist"]


def test_cli_rejects_daemon_arguments_the_daemon_would_reject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["service", "install", "--root", str(tmp_path), "--executable", "/usr/bin/dmnc", "--", "--no-such-flag"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "unrecognized arguments: --no-such-flag" in err
    assert "dmnc service install: not valid arguments for the dmnc daemon: --no-such-flag" in err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def user_writable_dmnc(tmp_path: Path) -> Path:
    """A dmnc executable in a folder anyone may write, as a venv in a user's home is to root."""
    folder = tmp_path / "venv" / "bin"
    folder.mkdir(parents=True)
    executable = folder / "dmnc"
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    folder.chmod(0o777)
    return executable


@pytest.mark.skipif(os.geteuid() != 0, reason="tmp_path is root's only when run as root")
def test_real_install_refuses_code_a_non_root_user_could_change(
    user_writable_dmnc: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr("dmnc.commands.service.apply", lambda actions: pytest.fail(f"would have done {actions}"))
    assert main(["service", "install", "--executable", str(user_writable_dmnc)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(
        f"dmnc service install: {user_writable_dmnc.parent} is group- and world-writable (mode 0777)"
    )
    assert "install a root-owned copy" in line


@pytest.mark.skipif(os.geteuid() != 0, reason="tmp_path is root's only when run as root")
def test_staged_and_dry_run_installs_only_warn_about_user_writable_code(
    user_writable_dmnc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    staged = ["service", "install", "--root", str(tmp_path / "stage"), "--manager", "systemd"]
    assert main([*staged, "--executable", str(user_writable_dmnc)]) == 0
    assert f"warning: {user_writable_dmnc.parent} is group- and world-writable" in capsys.readouterr().err
    assert main(["service", "install", "--dry-run", "--executable", str(user_writable_dmnc)]) == 0
    assert f"warning: {user_writable_dmnc.parent} is group- and world-writable" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="tmp_path is root's only when run as root")
def test_the_interpreter_a_script_names_is_checked_too(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "python3").write_text("")
    shared.chmod(0o777)
    script = tmp_path / "dmnc"
    script.write_text(f"#!{shared / 'python3'} -I\n")
    [problem] = code_trust_problems(service_code_paths((str(script),), package_folder=None))
    assert problem.startswith(f"{shared} is group- and world-writable (mode 0777) (the service runs {shared}/python3)")


def test_a_source_install_checks_the_package_folder_as_well() -> None:
    paths = service_code_paths(("/usr/bin/python3", "-m", "dmnc"), package_folder=Path("/opt/dmnc/lib/dmnc"))
    assert paths == [Path("/usr/bin/python3"), Path("/opt/dmnc/lib/dmnc")]


@pytest.fixture
def real_install_captured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Sequence[Action]]:
    """A real (root, "/") install on Linux whose actions are recorded, not carried out; no machine config file."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr("dmnc.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    planned: list[Sequence[Action]] = []

    def record(actions: Sequence[Action]) -> list[str]:
        planned.append(actions)
        return []

    monkeypatch.setattr("dmnc.commands.service.apply", record)
    return planned


def installed_exec_start(planned: list[Sequence[Action]]) -> str:
    [actions] = planned
    [unit] = [action for action in actions if isinstance(action, WriteFile)]
    return unit_settings(unit.content.decode())["Service"]["ExecStart"]


@pytest.mark.skipif(not Path("/usr/bin/true").exists(), reason="needs a root-owned executable")
def test_real_install_pins_the_unix_socket_docker_it_finds(
    real_install_captured: list[Sequence[Action]], monkeypatch: pytest.MonkeyPatch
) -> None:
    found = DaemonAddress.parse("unix:///home/dev/.docker/run/docker.sock")
    monkeypatch.setattr("dmnc.commands.service.discover_docker_endpoint", lambda: found)
    assert main(["service", "install", "--executable", "/usr/bin/true"]) == 0
    assert installed_exec_start(real_install_captured) == (
        "/usr/bin/true --docker-host unix:///home/dev/.docker/run/docker.sock"
    )


@pytest.mark.skipif(not Path("/usr/bin/true").exists(), reason="needs a root-owned executable")
def test_a_docker_host_root_named_is_kept_and_none_found_pins_nothing(
    real_install_captured: list[Sequence[Action]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("dmnc.commands.service.discover_docker_endpoint", lambda: pytest.fail("discovered"))
    assert main(["service", "install", "--executable", "/usr/bin/true", "--", "--docker-host", "unix:///d.sock"]) == 0
    assert installed_exec_start(real_install_captured) == "/usr/bin/true --docker-host unix:///d.sock"
    real_install_captured.clear()
    monkeypatch.setattr("dmnc.commands.service.discover_docker_endpoint", lambda: "no Docker daemon found now")
    assert main(["service", "install", "--executable", "/usr/bin/true"]) == 0
    assert installed_exec_start(real_install_captured) == "/usr/bin/true"
    assert "warning: no Docker daemon found now; the service will look for Docker" in capsys.readouterr().out
