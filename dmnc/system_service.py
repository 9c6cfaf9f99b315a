"""Run dmnc as a system service: a systemd unit on Linux, a launchd daemon on macOS.

Generation is pure (`systemd_unit`, `launchd_plist`); installing and removing are planned as a list of `Action`
values (`plan_install`, `plan_uninstall`) and only then carried out by `apply`, which reports exactly what it
wrote, removed and ran. A staging `root` directory lets tests (and packagers) install into a temp dir: paths are
joined under it and the service manager is not touched.
"""

from __future__ import annotations

import enum
import os
import plistlib
import re
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dmnc.hardening.file_trust import untrusted_path

SERVICE_NAME = "dmnc"
DESCRIPTION = "dmnc: reach Docker containers by IP through a WireGuard tunnel into the Docker VM"

SYSTEMD_UNIT_PATH = PurePosixPath("/etc/systemd/system/dmnc.service")
# Reverse-DNS label; Homebrew's own service uses `homebrew.mxcl.dmnc`, so both can be told apart.
LAUNCHD_LABEL = "io.github.dmnc"
# Root daemons live in /Library/LaunchDaemons and are loaded into launchd's "system" domain (launchd.plist(5),
# launchctl(1) `bootstrap system`).
LAUNCHD_PLIST_PATH = PurePosixPath(f"/Library/LaunchDaemons/{LAUNCHD_LABEL}.plist")
LAUNCHD_LOG_PATH = PurePosixPath("/var/log/dmnc.log")
# The daemon's TMPDIR: a onefile binary unpacks itself into TMPDIR at every start (PyInstaller's bootloader), and
# without one a root daemon uses /tmp or /var/tmp, which periodic(8)'s clean-tmps and other cleaners empty under
# a running process. A root-owned 0700 folder under /var/db (system state, never cleaned) keeps it safe.
LAUNCHD_TMPDIR = PurePosixPath("/var/db/dmnc/tmp")
PRIVATE_DIRECTORY_MODE = 0o700
# What `sudo brew services start dmnc` installs (Homebrew service.rb: label homebrew.mxcl.<formula>). Two dmnc
# daemons would fight over the tunnel port, the utun routes and the VM side, so only one may be installed.
HOMEBREW_LAUNCHD_PLIST_PATH = PurePosixPath("/Library/LaunchDaemons/homebrew.mxcl.dmnc.plist")

SERVICE_FILE_MODE = 0o644
# launchd is reported to refuse daemon plists that are group/world-writable or not root:wheel (not confirmed in
# Apple's documentation; the macOS CI job bootstraps a plist written this way). wheel is gid 0.
ROOT_UID = 0
ROOT_GID = 0

# systemd.service(5): stop gives the process this long after SIGTERM before SIGKILL; dmnc's orderly shutdown
# (routes removed, VM side torn down) takes at most 8 s (dmnc.supervisor.parts.SHUTDOWN_BUDGET_S): this leaves
# margin.
SYSTEMD_STOP_TIMEOUT_S = 15
SYSTEMD_RESTART_DELAY_S = 2
# The capabilities(7) the daemon uses, all it keeps under systemd: CAP_NET_ADMIN (TUN device, routes), CAP_CHOWN
# (the control socket's group), CAP_NET_BIND_SERVICE (DNS on port 53).
SERVICE_CAPABILITIES = ("CAP_NET_ADMIN", "CAP_CHOWN", "CAP_NET_BIND_SERVICE")

# Characters that never need quoting in a systemd command line (systemd.service(5), "Command lines").
_SYSTEMD_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./:=@+,-]+")
# systemd unit files are line based: control characters cannot be carried by any quoting.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
# Neither a unit file (UTF-8 text) nor a plist (XML 1.0 section 2.2, "Char") can carry lone surrogates or the
# noncharacters U+FFFE and U+FFFF.
_UNENCODABLE_CHARACTER = re.compile("[\ud800-\udfff\ufffe\uffff]")


class ServiceError(Exception):
    """A service file cannot be generated, written or removed; the message says which and why."""


class ServiceManager(enum.Enum):
    """The init system a service file is written for."""

    SYSTEMD = "systemd"
    LAUNCHD = "launchd"

    @classmethod
    def for_platform(cls, platform: str | None = None) -> ServiceManager:
        platform = sys.platform if platform is None else platform
        if platform.startswith("linux"):
            return cls.SYSTEMD
        if platform == "darwin":
            return cls.LAUNCHD
        raise ServiceError(f"no service manager support for platform {platform!r} (supported: linux, darwin)")

    @property
    def service_path(self) -> PurePosixPath:
        return SYSTEMD_UNIT_PATH if self is ServiceManager.SYSTEMD else LAUNCHD_PLIST_PATH


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What the service runs: the full command line of the dmnc daemon (`dmnc` with no subcommand runs it)."""

    program_arguments: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.program_arguments:
            raise ServiceError("the service command line is empty")
        if not PurePosixPath(self.program_arguments[0]).is_absolute():
            raise ServiceError(f"the service executable must be an absolute path, got {self.program_arguments[0]!r}")
        for argument in self.program_arguments:
            if _CONTROL_CHARACTER.search(argument):
                raise ServiceError(f"service argument {argument!r} contains a control character")
            if _UNENCODABLE_CHARACTER.search(argument):
                raise ServiceError(f"service argument {argument!r} contains a character no service file can carry")


def current_command(argv0: str = sys.argv[0], *, frozen: bool | None = None) -> tuple[str, ...]:
    """The command that runs this very dmnc: the frozen binary, the `dmnc` script, or `python -m dmnc`.

    The script path is made absolute but symlinks are kept: Homebrew's `bin/dmnc` is a symlink into a versioned
    Cellar directory, and the service must keep working after an upgrade.
    """
    if frozen if frozen is not None else bool(getattr(sys, "frozen", False)):
        return (str(Path(sys.executable).absolute()),)
    script = Path(argv0)
    if script.name == SERVICE_NAME and script.is_file():
        return (str(script.absolute()),)
    return (str(Path(sys.executable).absolute()), "-m", SERVICE_NAME)


# How to get a copy that only root can change: what the refusal of a user-writable install suggests.
ROOT_OWNED_COPY_HINT = (
    "install a root-owned copy (the released binary: `sudo install -o root -m 0755 dmnc /usr/local/bin/dmnc`; or "
    "`sudo python3 -m venv /opt/dmnc && sudo /opt/dmnc/bin/pip install dmnc`) and run its `dmnc service install`"
)


def service_code_paths(program_arguments: Sequence[str], *, package_folder: Path | None) -> list[Path]:
    """The files whose code the service runs: its executable, the interpreter a script's `#!` line names, and the
    folder of the Python package when it runs from source (`python -m dmnc`, a venv's `dmnc` script)."""
    executable = Path(program_arguments[0])
    paths = [executable]
    interpreter = _shebang_interpreter(executable)
    if interpreter is not None:
        paths.append(interpreter)
    if package_folder is not None:
        paths.append(package_folder)
    return paths


def _shebang_interpreter(script: Path) -> Path | None:
    """The absolute interpreter path of a `#!` script (execve(2), "Interpreter scripts"), else None."""
    try:
        with script.open("rb") as stream:
            first_line = stream.readline(4096)
    except OSError:
        return None
    words = first_line[2:].split() if first_line.startswith(b"#!") else []
    if not words or not words[0].startswith(b"/"):
        return None
    return Path(os.fsdecode(words[0]))


def code_trust_problems(paths: Sequence[Path]) -> list[str]:
    """One line per path of `paths` that a non-root user could change (file_trust.untrusted_path), each naming the
    file or folder, why, and how to install a root-owned copy."""
    problems = []
    for path in paths:
        try:
            found = untrusted_path(path)
        except OSError as error:
            problems.append(f"cannot check {path}: {error.strerror or error}")
            continue
        if found is not None:
            where, reason = found
            subject = "" if where == path else f" (the service runs {path})"
            problems.append(
                f"{where} is {reason}{subject}: a non-root user could change what the root service runs; "
                + ROOT_OWNED_COPY_HINT
            )
    return problems


def systemd_quote(argument: str) -> str:
    """Quote one argument for a systemd `ExecStart=` line so systemd hands it to dmnc unchanged.

    Inside and outside quotes systemd expands `%` specifiers and `$VAR` (systemd.service(5) "Command lines",
    systemd.unit(5) "Specifiers"): those are doubled. Anything beyond plain characters is double-quoted with C-style
    escapes for backslash and the quote itself.
    """
    if _CONTROL_CHARACTER.search(argument):
        raise ServiceError(f"service argument {argument!r} contains a control character")
    escaped = argument.replace("%", "%%").replace("$", "$$")
    if escaped and _SYSTEMD_PLAIN_WORD.fullmatch(escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(spec: ServiceSpec) -> str:
    """The text of /etc/systemd/system/dmnc.service."""
    exec_start = " ".join(systemd_quote(argument) for argument in spec.program_arguments)
    capabilities = " ".join(SERVICE_CAPABILITIES)
    return f"""\
[Unit]
Description={DESCRIPTION}
# The tunnel needs the network; Docker may start later or restart: dmnc waits and reconnects by itself.
Wants=network-online.target
After=network-online.target docker.service

[Service]
Type=exec
ExecStart={exec_start}
# dmnc reloads its config file on SIGHUP.
ExecReload=kill -HUP $MAINPID
# SIGTERM makes dmnc remove its routes and the VM-side interface before exiting.
KillMode=mixed
TimeoutStopSec={SYSTEMD_STOP_TIMEOUT_S}
Restart=on-failure
RestartSec={SYSTEMD_RESTART_DELAY_S}
# Least privilege (systemd.exec(5)). dmnc runs as root but keeps only the capabilities it uses: CAP_NET_ADMIN
# for the TUN device and its routes, CAP_CHOWN to give the control socket its group, CAP_NET_BIND_SERVICE for
# DNS on port 53. Without CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH it reaches only root's files and sockets: the
# system Docker socket is root's, and a socket in a user's home would need CAP_DAC_OVERRIDE (connect(2) needs
# write permission on the socket), far more than a read-only search capability. AmbientCapabilities= is absent:
# a root service already holds its bounding set, so it would add nothing.
CapabilityBoundingSet={capabilities}
NoNewPrivileges=yes
# dmnc writes only its control socket and lock (under /run); everything else, /proc/sys included, is read-only:
# the TUN is configured through rtnetlink, never through /proc/sys/net.
ProtectSystem=strict
ReadWritePaths=/run
ProtectHome=read-only
PrivateTmp=yes
PrivateIPC=yes
PrivateMounts=yes
# The TUN clone device is the only device node dmnc opens. PrivateDevices= is absent: its private /dev has no
# /dev/net/tun.
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
# ProcSubset=pid is absent: it hides /proc/sys and /proc/net, which the kernel's view of the network lives in.
# AF_UNIX for Docker and the control socket, AF_INET/AF_INET6 for the tunnel, AF_NETLINK for links and routes.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# MemoryDenyWriteExecute= is absent: libffi closures (ctypes callbacks) need writable and executable memory, and
# no lab runs dmnc under systemd to show that none of its libraries ever makes one.
SystemCallArchitectures=native
# ~@privileged is absent: it holds chown(2) (the control socket's group) and capset(2). ~@resources is absent: it
# holds setrlimit(2), which dmnc uses to turn core dumps off.
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# The process holds the host's WireGuard private key: no core dumps, and nothing it creates readable by others.
LimitCORE=0
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def launchd_plist(spec: ServiceSpec) -> bytes:
    """The bytes of /Library/LaunchDaemons/<LAUNCHD_LABEL>.plist (XML plist, launchd.plist(5))."""
    document: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(spec.program_arguments),
        "RunAtLoad": True,
        # dmnc runs in the foreground and handles SIGTERM itself, as launchd.plist(5) asks of daemons.
        "KeepAlive": True,
        "StandardOutPath": str(LAUNCHD_LOG_PATH),
        "StandardErrorPath": str(LAUNCHD_LOG_PATH),
        "EnvironmentVariables": {"TMPDIR": str(LAUNCHD_TMPDIR)},
    }
    return plistlib.dumps(document, fmt=plistlib.FMT_XML, sort_keys=False)


def service_file(manager: ServiceManager, spec: ServiceSpec) -> bytes:
    if manager is ServiceManager.SYSTEMD:
        return systemd_unit(spec).encode()
    return launchd_plist(spec)


@dataclass(frozen=True, slots=True)
class WriteFile:
    path: Path
    content: bytes
    mode: int
    owner: tuple[int, int] | None  # (uid, gid) to chown to, None to keep the writer's

    def describe(self) -> str:
        owner = "" if self.owner is None else f" owner {self.owner[0]}:{self.owner[1]}"
        return f"write {self.path} (mode {self.mode:04o}{owner}, {len(self.content)} bytes)"


@dataclass(frozen=True, slots=True)
class MakeDirectory:
    """A directory (and its missing parents) with `mode`, given to `owner` (uid, gid) when set; an existing one is
    brought to that mode and owner, a symlink or non-directory in its place refused."""

    path: Path
    mode: int
    owner: tuple[int, int] | None

    def describe(self) -> str:
        owner = "" if self.owner is None else f" owner {self.owner[0]}:{self.owner[1]}"
        return f"make directory {self.path} (mode {self.mode:04o}{owner})"


@dataclass(frozen=True, slots=True)
class RemoveFile:
    path: Path

    def describe(self) -> str:
        return f"remove {self.path}"


@dataclass(frozen=True, slots=True)
class RunCommand:
    argv: tuple[str, ...]
    # Stopping a service that is not loaded fails; that must not prevent removing its file.
    may_fail: bool = False

    def describe(self) -> str:
        return "run " + " ".join(self.argv)


@dataclass(frozen=True, slots=True)
class RetryingCommand:
    """A command run again while it fails with one of `retry_exit_codes`, for at most `retry_for_s` seconds."""

    argv: tuple[str, ...]
    retry_exit_codes: frozenset[int]
    retry_for_s: float

    def describe(self) -> str:
        return "run " + " ".join(self.argv) + f" (again for up to {self.retry_for_s:g} s while it fails transiently)"


@dataclass(frozen=True, slots=True)
class WaitUntilUnloaded:
    """Wait until launchd no longer knows `label` in the system domain: `launchctl bootout` only sends SIGTERM and
    returns, the label stays loaded until the daemon has exited (Homebrew's services/cli.rb `stop` waits the same
    way). Fails with a ServiceError after `timeout_s`."""

    label: str
    timeout_s: float

    def describe(self) -> str:
        return f"wait up to {self.timeout_s:g} s until launchd has unloaded system/{self.label}"


Action = WriteFile | MakeDirectory | RemoveFile | RunCommand | RetryingCommand | WaitUntilUnloaded

# launchd.plist(5) ExitTimeOut: launchd waits this long (default 20 s) between SIGTERM and SIGKILL, so a booted-out
# daemon is gone after at most that, plus launchd's own clean-up; the margin covers the latter.
LAUNCHD_EXIT_TIMEOUT_S = 20.0
LAUNCHD_UNLOAD_WAIT_S = LAUNCHD_EXIT_TIMEOUT_S + 10.0
# `launchctl bootstrap` fails with errno 5 (EIO) or 37 (EALREADY, sys/errno.h on macOS) while a booted-out
# instance of the label is still being cleaned up; it succeeds once launchd has finished.
LAUNCHD_BOOTSTRAP_TRANSIENT_EXITS = frozenset({5, 37})
LAUNCHD_BOOTSTRAP_RETRY_S = 15.0
# `launchctl print system/L` exits 113 and prints 'Could not find service "L" in domain for system' for a label
# that is not loaded.
LAUNCHCTL_NOT_FOUND_EXIT = 113
LAUNCHCTL_NOT_FOUND_TEXT = "could not find service"
LAUNCHCTL_POLL_INTERVAL_S = 0.5


def staged_path(root: Path, path: PurePosixPath) -> Path:
    """`path` (absolute) placed under the staging `root` ("/" for a real install)."""
    return root.joinpath(*path.parts[1:])


def check_no_homebrew_service(manager: ServiceManager, *, root: Path) -> None:
    """Refuse to install beside Homebrew's dmnc service (see HOMEBREW_LAUNCHD_PLIST_PATH)."""
    homebrew_plist = staged_path(root, HOMEBREW_LAUNCHD_PLIST_PATH)
    if manager is ServiceManager.LAUNCHD and homebrew_plist.exists():
        raise ServiceError(
            f"Homebrew's dmnc service is installed ({homebrew_plist}): keep using it, or stop it first with "
            "`sudo brew services stop dmnc`"
        )


def plan_install(
    manager: ServiceManager, spec: ServiceSpec, *, root: Path, activate: bool, chown: bool = True
) -> list[Action]:
    """Write the service file and, when `activate`, register and start it with the service manager.

    `chown` gives a launchd plist to root:wheel; only root can, so an unprivileged staging install passes False.
    """
    owner = (ROOT_UID, ROOT_GID) if chown and manager is ServiceManager.LAUNCHD else None
    actions: list[Action] = []
    if manager is ServiceManager.LAUNCHD:
        actions.append(MakeDirectory(staged_path(root, LAUNCHD_TMPDIR), PRIVATE_DIRECTORY_MODE, owner))
    actions.append(
        WriteFile(
            path=staged_path(root, manager.service_path),
            content=service_file(manager, spec),
            mode=SERVICE_FILE_MODE,
            owner=owner,
        )
    )
    if not activate:
        return actions
    if manager is ServiceManager.SYSTEMD:
        actions += [
            RunCommand(("systemctl", "daemon-reload")),
            RunCommand(("systemctl", "enable", "--now", SYSTEMD_UNIT_PATH.name)),
        ]
    else:
        # Same sequence as `brew services start` for a root service (Homebrew's Library/Homebrew/services: `launchctl
        # enable` then `bootstrap system FILE`). A service that is already loaded must be booted out first, or
        # bootstrap fails and the old plist keeps running; bootout returns before the old daemon has exited, so
        # the plan waits for the label to go and bootstrap is retried while launchd still cleans up.
        actions += [
            *_launchd_stop(),
            RunCommand(("launchctl", "enable", f"system/{LAUNCHD_LABEL}")),
            RetryingCommand(
                ("launchctl", "bootstrap", "system", str(LAUNCHD_PLIST_PATH)),
                retry_exit_codes=LAUNCHD_BOOTSTRAP_TRANSIENT_EXITS,
                retry_for_s=LAUNCHD_BOOTSTRAP_RETRY_S,
            ),
        ]
    return actions


def plan_uninstall(manager: ServiceManager, *, root: Path, activate: bool) -> list[Action]:
    """Stop and unregister the service (when `activate`), then remove its file."""
    actions: list[Action] = []
    if activate and manager is ServiceManager.SYSTEMD:
        actions.append(RunCommand(("systemctl", "disable", "--now", SYSTEMD_UNIT_PATH.name), may_fail=True))
    elif activate:
        actions += _launchd_stop()
    actions.append(RemoveFile(staged_path(root, manager.service_path)))
    if activate and manager is ServiceManager.SYSTEMD:
        actions.append(RunCommand(("systemctl", "daemon-reload")))
    return actions


def _launchd_stop() -> list[Action]:
    """Boot the daemon out (a label that is not loaded makes bootout fail: ignored) and wait until it has exited."""
    return [
        RunCommand(("launchctl", "bootout", f"system/{LAUNCHD_LABEL}"), may_fail=True),
        WaitUntilUnloaded(LAUNCHD_LABEL, LAUNCHD_UNLOAD_WAIT_S),
    ]


CommandRunner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


@dataclass(frozen=True, slots=True)
class Waiting:
    """How `apply` waits between tries (injected by tests)."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    interval_s: float = LAUNCHCTL_POLL_INTERVAL_S


def apply(actions: Sequence[Action], *, runner: CommandRunner = run_command, waiting: Waiting = Waiting()) -> list[str]:
    """Carry out `actions` in order; returns one line per action saying what was actually done.

    Stops at the first failure with a `ServiceError` naming the action; what was done before is in its message.
    """
    report: list[str] = []
    for action in actions:
        try:
            report.append(_apply_one(action, runner, waiting))
        except ServiceError as error:
            done = "; ".join(report) if report else "nothing"
            raise ServiceError(f"{error} (done before the failure: {done})") from error
    return report


def _apply_one(action: Action, runner: CommandRunner, waiting: Waiting) -> str:
    if isinstance(action, WriteFile | MakeDirectory | RemoveFile):
        return _apply_file_action(action)
    if isinstance(action, WaitUntilUnloaded):
        return _wait_until_unloaded(action, runner, waiting)
    if isinstance(action, RetryingCommand):
        return _run_retrying(action, runner, waiting)
    completed = _run(action.argv, runner)
    command = " ".join(action.argv)
    if completed.returncode == 0:
        return f"ran {command}"
    if action.may_fail:
        return f"ran {command} (exit {completed.returncode}, ignored: {_last_line(completed)})"
    raise ServiceError(f"{command} failed with exit {completed.returncode}: {_last_line(completed)}")


def _apply_file_action(action: WriteFile | MakeDirectory | RemoveFile) -> str:
    if isinstance(action, WriteFile):
        return _write_file(action)
    if isinstance(action, MakeDirectory):
        return _make_directory(action)
    return _remove_file(action)


def _make_directory(action: MakeDirectory) -> str:
    try:
        action.path.mkdir(parents=True, exist_ok=True)
        status = action.path.lstat()
        if not stat.S_ISDIR(status.st_mode):
            raise ServiceError(f"cannot use {action.path}: it exists and is not a directory")
        os.chmod(action.path, action.mode, follow_symlinks=False)
        if action.owner is not None:
            os.chown(action.path, *action.owner, follow_symlinks=False)
    except OSError as error:
        raise ServiceError(f"cannot make {action.path}: {error.strerror or error}") from error
    return f"made {action.path} (mode {action.mode:04o})"


def _remove_file(action: RemoveFile) -> str:
    try:
        action.path.unlink()
    except FileNotFoundError:
        return f"{action.path} was not installed: nothing to remove"
    except OSError as error:
        raise ServiceError(f"cannot remove {action.path}: {error.strerror}") from error
    return f"removed {action.path}"


def _run(argv: Sequence[str], runner: CommandRunner) -> subprocess.CompletedProcess[str]:
    try:
        return runner(argv)
    except OSError as error:
        raise ServiceError(f"cannot run {argv[0]}: {error.strerror}") from error


def _last_line(completed: subprocess.CompletedProcess[str]) -> str:
    detail = (completed.stderr or completed.stdout).strip().splitlines()
    return detail[-1] if detail else "no output"


def _run_retrying(action: RetryingCommand, runner: CommandRunner, waiting: Waiting) -> str:
    command = " ".join(action.argv)
    deadline = waiting.clock() + action.retry_for_s
    tries = 1
    while True:
        completed = _run(action.argv, runner)
        if completed.returncode == 0:
            return f"ran {command}" + ("" if tries == 1 else f" (succeeded on try {tries})")
        if completed.returncode not in action.retry_exit_codes or waiting.clock() >= deadline:
            raise ServiceError(
                f"{command} failed with exit {completed.returncode} after {tries} tries: {_last_line(completed)}"
            )
        waiting.sleep(waiting.interval_s)
        tries += 1


def _wait_until_unloaded(action: WaitUntilUnloaded, runner: CommandRunner, waiting: Waiting) -> str:
    argv = ("launchctl", "print", f"system/{action.label}")
    started = waiting.clock()
    while True:
        completed = _run(argv, runner)
        output = (completed.stderr + completed.stdout).lower()
        if completed.returncode == LAUNCHCTL_NOT_FOUND_EXIT or LAUNCHCTL_NOT_FOUND_TEXT in output:
            return f"launchd has unloaded system/{action.label} ({waiting.clock() - started:.1f} s)"
        if completed.returncode != 0:
            raise ServiceError(
                f"cannot tell whether system/{action.label} has stopped: {' '.join(argv)} failed with exit "
                f"{completed.returncode}: {_last_line(completed)}"
            )
        if waiting.clock() - started >= action.timeout_s:
            raise ServiceError(
                f"system/{action.label} is still loaded {action.timeout_s:g} s after bootout: see "
                f"`sudo launchctl print system/{action.label}` and {LAUNCHD_LOG_PATH}"
            )
        waiting.sleep(waiting.interval_s)


def _write_file(action: WriteFile) -> str:
    temporary: Path | None = None
    try:
        action.path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: the service manager never sees a half-written file. mkstemp creates
        # a fresh name exclusively, so nothing planted in the directory can redirect the write.
        descriptor, name = tempfile.mkstemp(dir=action.path.parent, prefix=f".{action.path.name}.")
        temporary = Path(name)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(action.content)
        os.chmod(temporary, action.mode)
        if action.owner is not None:
            os.chown(temporary, *action.owner)
        os.replace(temporary, action.path)
    except OSError as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise ServiceError(f"cannot write {action.path}: {error.strerror or error}") from error
    return f"wrote {action.path} ({len(action.content)} bytes, mode {action.mode:04o})"
