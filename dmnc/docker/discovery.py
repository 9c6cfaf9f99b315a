"""Which Docker daemon socket to use, and which product serves it.

`discover_endpoint` tries, in this order, logging each step at INFO on the `dmnc.docker.discovery` logger:

1. `--docker-host` (the `docker_host` argument), else the DOCKER_HOST environment variable (unix:// or tcp://).
   An explicit setting is authoritative: if it does not answer, discovery fails instead of silently using another
   daemon.
2. The invoking user's active docker context: DOCKER_CONTEXT, else `currentContext` of the user's
   ~/.docker/config.json (DOCKER_CONFIG overrides the directory outside sudo), resolved through
   ~/.docker/contexts/meta/<sha256 of the name>/meta.json (`Endpoints.docker.Host`). Running as root, the user
   dmnc acts for is SUDO_USER under sudo, else (the macOS root service) the console user; their home, not root's,
   is searched.
3. The sockets the known runtimes create, for the invoking user: Docker Desktop (~/.docker/run/docker.sock,
   ~/.docker/desktop/docker.sock), /var/run/docker.sock, Colima (~/.colima/<profile>/docker.sock, default profile
   first), Rancher Desktop (~/.rd/docker.sock), OrbStack (~/.orbstack/run/docker.sock), Lima
   (~/.lima/<instance>/sock/docker.sock), Podman (machine sockets under ~/.local/share/containers/podman/machine
   and, for Podman 5 on macOS, the user's $TMPDIR/podman/<machine>-api.sock; /run/podman/podman.sock,
   /run/user/<uid>/podman/podman.sock).

Running as root, dmnc trusts only what root or that user owns: their config.json and meta.json are read only when
they are regular files (symlinks followed) owned by them or root and at most MAX_DOCKER_FILE_BYTES, opened without
blocking (a FIFO there must not freeze the service); a socket must be owned by root or them (one given with
`--docker-host` is root's own choice); a tcp:// daemon is used only from `--docker-host` (the flag or docker_host in
the root-owned config), never from DOCKER_HOST or a context, which come from the user (`sudo -E` keeps DOCKER_HOST).
dmnc speaks no TLS: DOCKER_TLS_VERIFY or a context with TLS material is reported, never downgraded to plain HTTP.

A socket counts when it exists, is a socket, and answers `GET /version` with an API version dmnc can speak. If
nothing does, `DiscoveryError.attempts` lists every place tried and why each failed (missing, dangling symlink,
not a socket, permission denied, refused, timed out, ...).

`detect_runtime` names the product (Docker Desktop, Colima, ...) from `/info`, `/version` and the socket path.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import pwd
import stat
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from dmnc.docker.address import DaemonAddress
from dmnc.docker.client import DockerClient
from dmnc.docker.errors import DiscoveryAttempt, DiscoveryError, DockerError, InvalidDaemonAddress
from dmnc.docker.models import Info, Version
from dmnc.docker.untrusted_json import loads_untrusted
from dmnc.logsetup import printable

logger = logging.getLogger(__name__)

SYSTEM_DOCKER_SOCKET = Path("/var/run/docker.sock")
SYSTEM_PODMAN_SOCKET = Path("/run/podman/podman.sock")
# How long a candidate socket may take to answer GET /version. A daemon that is starting, waking (Resource Saver)
# or busy takes seconds (Podman's API service under load took over 3 s in the lab); missing sockets fail at once,
# so only a socket that accepts and never answers costs this much.
PROBE_TIMEOUT_S = 8.0
# The docker CLI's name for "no context configured: use DOCKER_HOST or the default socket".
DEFAULT_CONTEXT_NAME = "default"
# config.json (auths, credential helpers, proxies) and a context's meta.json are kilobytes; root reads no more of a
# user's file than this.
MAX_DOCKER_FILE_BYTES = 1 << 20
# Sources root has configured itself (the flag, or docker_host in the root-owned config file, which arrives as the
# flag's value): only these may name a tcp:// daemon when dmnc runs as root.
ROOT_CONFIGURED_SOURCES = frozenset({"--docker-host"})
NO_TLS = "dmnc speaks no TLS to the Docker daemon"

Probe = Callable[[DaemonAddress], Awaitable[str | None]]
"""Checks a candidate: None when a daemon answers there, else why not."""


@dataclass(frozen=True)
class DockerEndpoint:
    """The daemon discovery chose: its address, where that came from (for logs and `dmnc status`), and every
    attempt up to and including the successful one."""

    address: DaemonAddress
    source: str
    attempts: tuple[DiscoveryAttempt, ...] = ()


@dataclass(frozen=True)
class DiscoveryEnvironment:
    """What discovery reads from the process: environment, effective UID, a user -> home lookup and, for a root
    service started by launchd/systemd rather than sudo, the user logged in at the console."""

    environ: Mapping[str, str]
    euid: int
    home_of_user: Callable[[str], Path | None]
    console_user: tuple[str, int] | None = None
    system_docker_socket: Path = SYSTEM_DOCKER_SOCKET
    system_podman_socket: Path = SYSTEM_PODMAN_SOCKET
    run_user_dir: Path = Path("/run/user")
    # macOS per-user temporary directories (/var/folders/<xx>/<id>/T): Podman 5 machines put their API socket there.
    darwin_temp_root: Path = Path("/var/folders")

    @classmethod
    def from_process(cls) -> Self:
        return cls(
            environ=dict(os.environ),
            euid=os.geteuid(),
            home_of_user=_home_from_passwd,
            console_user=_console_user() if sys.platform == "darwin" else None,
        )

    @property
    def desktop_user(self) -> tuple[str, int] | None:
        """(name, uid) of the user whose Docker setup a root dmnc serves: SUDO_USER under `sudo dmnc ...`, else
        the console user (the root service on macOS); None when dmnc runs as that user itself."""
        if self.euid != 0:
            return None
        sudo_user = self.environ.get("SUDO_USER")
        sudo_uid = self.environ.get("SUDO_UID", "")
        if sudo_user and sudo_user != "root":
            return sudo_user, int(sudo_uid) if sudo_uid.isdigit() else self.euid
        return self.console_user

    def invoking_home(self) -> Path | None:
        desktop_user = self.desktop_user
        if desktop_user is not None:
            return self.home_of_user(desktop_user[0])
        home = self.environ.get("HOME")
        return Path(home) if home else None

    def invoking_uid(self) -> int:
        desktop_user = self.desktop_user
        return self.euid if desktop_user is None else desktop_user[1]

    def docker_config_dir(self) -> Path | None:
        # Acting for another user, DOCKER_CONFIG (if sudo kept it) may be root's; that user's own directory counts.
        configured = self.environ.get("DOCKER_CONFIG")
        if configured and self.desktop_user is None:
            return Path(configured)
        home = self.invoking_home()
        return home / ".docker" if home is not None else None


@dataclass(frozen=True)
class Candidate:
    """A place to try: where it came from, and either an address or the reason it yields none."""

    source: str
    location: str
    address: DaemonAddress | None = None
    problem: str | None = None


def _console_user() -> tuple[str, int] | None:
    """The user logged in at the macOS console (owner of /dev/console), unless that is root (nobody logged in)."""
    try:
        uid = os.stat("/dev/console").st_uid
        return (pwd.getpwuid(uid).pw_name, uid) if uid != 0 else None
    except (OSError, KeyError):
        return None


def _home_from_passwd(user: str) -> Path | None:
    try:
        return Path(pwd.getpwnam(user).pw_dir)
    except KeyError:
        return None


def explicit_candidate(docker_host: str | None, env: DiscoveryEnvironment) -> Candidate | None:
    """The user's explicit choice (--docker-host, else DOCKER_HOST), if any."""
    for source, value in (("--docker-host", docker_host), ("DOCKER_HOST", env.environ.get("DOCKER_HOST"))):
        if not value:
            continue
        candidate = _candidate_for_url(source, value)
        # dmnc speaks plain HTTP only; against a TLS port that would end in a confusing "malformed HTTP", and
        # speaking plain HTTP where TLS was asked for would be a silent downgrade.
        if candidate.address is not None and candidate.address.host is not None and _tls_requested(env):
            return Candidate(source, value, problem=f"DOCKER_TLS_VERIFY is set and {NO_TLS}: use the unix socket")
        return _refuse_tcp_from_the_user(candidate, env, root_configured=source in ROOT_CONFIGURED_SOURCES)
    return None


def _refuse_tcp_from_the_user(candidate: Candidate, env: DiscoveryEnvironment, *, root_configured: bool) -> Candidate:
    """As root, a tcp:// daemon only when root configured it: DOCKER_HOST (kept by `sudo -E`) and contexts come from
    the user's environment and files, and a tcp:// daemon there could be anyone's, where a socket's owner is known."""
    if env.euid != 0 or root_configured or candidate.address is None or candidate.address.host is None:
        return candidate
    return Candidate(
        candidate.source,
        candidate.location,
        problem="a tcp:// daemon from the user's environment is not used by root: pass --docker-host"
        " or set docker_host in the root-owned config file",
    )


def _tls_requested(env: DiscoveryEnvironment) -> bool:
    return env.environ.get("DOCKER_TLS_VERIFY", "") not in {"", "0"}


class _UnusableContext(Exception):
    def __init__(self, location: Path, problem: str) -> None:
        super().__init__(problem)
        self.location = location
        self.problem = problem


def context_candidate(env: DiscoveryEnvironment) -> Candidate | None:
    """The invoking user's active docker context, or None when the default context is active."""
    config_dir = env.docker_config_dir()
    if config_dir is None:
        return None
    source = "docker context"
    try:
        name = _active_context_name(env, config_dir)
        if name is None or name == DEFAULT_CONTEXT_NAME:
            return None
        source = f"docker context {name!r}"
        candidate = _candidate_for_url(source, _context_docker_host(env, config_dir, name))
        return _refuse_tcp_from_the_user(candidate, env, root_configured=False)
    except _UnusableContext as unusable:
        return Candidate(source, str(unusable.location), problem=unusable.problem)


def _active_context_name(env: DiscoveryEnvironment, config_dir: Path) -> str | None:
    # Under sudo, DOCKER_CONTEXT (if sudo kept it) may be root's choice; the user's config.json is theirs.
    name = env.environ.get("DOCKER_CONTEXT") if env.desktop_user is None else None
    if name:
        return name
    config_path = config_dir / "config.json"
    if not config_path.exists():
        return None
    config = _read_json(config_path, env)
    current = config.get("currentContext") if isinstance(config, dict) else None
    return current if isinstance(current, str) and current else None


def _context_docker_host(env: DiscoveryEnvironment, config_dir: Path, name: str) -> str:
    # The CLI stores each context under the SHA-256 of its name (docker/cli, context/store), its TLS material under
    # contexts/tls/<same>/docker.
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta_path = config_dir / "contexts" / "meta" / digest / "meta.json"
    if not meta_path.exists():
        raise _UnusableContext(meta_path, "context not found (no meta.json)")
    tls_path = config_dir / "contexts" / "tls" / digest / "docker"
    if tls_path.exists():
        raise _UnusableContext(tls_path, f"the context uses TLS and {NO_TLS}: use a unix socket context")
    meta = _read_json(meta_path, env)
    endpoints = meta.get("Endpoints") if isinstance(meta, dict) else None
    docker = endpoints.get("docker") if isinstance(endpoints, dict) else None
    host = docker.get("Host") if isinstance(docker, dict) else None
    if not isinstance(host, str) or not host:
        raise _UnusableContext(meta_path, "no Endpoints.docker.Host in meta.json")
    return host


def _read_json(path: Path, env: DiscoveryEnvironment) -> object:
    try:
        return loads_untrusted(read_user_file(path, env.invoking_uid()))
    except (UnusableFile, ValueError) as error:  # ValueError includes UnicodeDecodeError
        raise _UnusableContext(path, f"unreadable: {error}") from error


class UnusableFile(Exception):
    """A user's Docker file that root does not read: why, in one line."""


def read_user_file(path: Path, owner_uid: int) -> bytes:
    """The bytes of a regular file of `owner_uid` (or root), at most MAX_DOCKER_FILE_BYTES; UnusableFile if not.

    Root reads the user's files: opened with O_NONBLOCK, so a FIFO or a device in their place cannot block the
    event loop (open(2): a FIFO opened read-only and non-blocking returns at once), then judged by fstat(2) on what
    was opened, so a symlink (a dotfile manager's) is allowed and judged by its target, with no race between a
    check and the open."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        raise UnusableFile(error.strerror or str(error)) from error
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise UnusableFile("not a regular file")
        if info.st_uid not in (0, owner_uid):
            raise UnusableFile(f"owned by uid {info.st_uid}, neither root nor uid {owner_uid}")
        if info.st_size > MAX_DOCKER_FILE_BYTES:
            raise UnusableFile(f"larger than {MAX_DOCKER_FILE_BYTES} bytes")
        data = bytearray()
        while len(data) <= MAX_DOCKER_FILE_BYTES and (piece := os.read(descriptor, MAX_DOCKER_FILE_BYTES + 1)):
            data += piece
        if len(data) > MAX_DOCKER_FILE_BYTES:  # it grew after fstat
            raise UnusableFile(f"larger than {MAX_DOCKER_FILE_BYTES} bytes")
        return bytes(data)
    except OSError as error:
        raise UnusableFile(error.strerror or str(error)) from error
    finally:
        os.close(descriptor)


def runtime_socket_candidates(env: DiscoveryEnvironment) -> list[Candidate]:
    """The sockets known runtimes create, in discovery order (see the module docstring). Where a runtime keeps one
    socket per profile/instance and none exists, one candidate says so, so a failure report still names it."""
    home = env.invoking_home()
    candidates: list[Candidate] = []

    def add(source: str, path: Path) -> None:
        candidates.append(Candidate(source, str(path), DaemonAddress.parse(f"unix://{path}")))

    def add_each(runtime: str, paths: list[Path], source_of: Callable[[Path], str], where: Path, missing: str) -> None:
        if not paths:
            candidates.append(Candidate(runtime, str(where), problem=missing))
        for path in paths:
            add(source_of(path), path)

    if home is not None:
        add("Docker Desktop", home / ".docker" / "run" / "docker.sock")
        add("Docker Desktop", home / ".docker" / "desktop" / "docker.sock")
    add("system docker socket", env.system_docker_socket)
    if home is not None:
        add_each("Colima", _colima_sockets(home), _colima_source, home / ".colima", "no profile has a docker.sock")
        add("Rancher Desktop", home / ".rd" / "docker.sock")
        add("OrbStack", home / ".orbstack" / "run" / "docker.sock")
        lima = _sorted_glob(home / ".lima", "*/sock/docker.sock")
        add_each("Lima", lima, _lima_source, home / ".lima", "no instance has a docker.sock")
        machine_dir = home / ".local" / "share" / "containers" / "podman" / "machine"
        machines = [
            *_sorted_glob(machine_dir, "*/podman.sock"),
            *_sorted_glob(machine_dir, "*/*/podman.sock"),
            *_owned_podman5_sockets(env),
        ]
        add_each("Podman machine", machines, lambda _path: "Podman machine", machine_dir, "no machine API socket")
    add("Podman (rootful)", env.system_podman_socket)
    add("Podman (rootless)", env.run_user_dir / str(env.invoking_uid()) / "podman" / "podman.sock")
    return candidates


def all_candidates(docker_host: str | None, env: DiscoveryEnvironment) -> Iterator[Candidate]:
    """Every candidate in order; after an explicit choice nothing else is offered."""
    explicit = explicit_candidate(docker_host, env)
    if explicit is not None:
        yield explicit
        return
    context = context_candidate(env)
    if context is not None:
        yield context
    seen: set[str] = set()
    if context is not None and context.address is not None:
        seen.add(context.address.url)
    for candidate in runtime_socket_candidates(env):
        if candidate.address is None:
            yield candidate
        elif candidate.address.url not in seen:
            seen.add(candidate.address.url)
            yield candidate


async def probe_daemon(address: DaemonAddress) -> str | None:
    """The default probe: connect and negotiate an API version within PROBE_TIMEOUT_S."""
    try:
        async with DockerClient.connect(address, request_timeout=PROBE_TIMEOUT_S):
            return None
    except DockerError as error:
        return error.message


async def discover_endpoint(
    docker_host: str | None = None, *, env: DiscoveryEnvironment | None = None, probe: Probe = probe_daemon
) -> DockerEndpoint:
    """The first candidate with a daemon behind it; DiscoveryError listing every attempt when there is none."""
    environment = DiscoveryEnvironment.from_process() if env is None else env
    if environment.desktop_user is not None:
        logger.info(
            "docker discovery: running as root for %s, looking at their configuration", environment.desktop_user[0]
        )
    attempts: list[DiscoveryAttempt] = []
    for candidate in all_candidates(docker_host, environment):
        # Locations come from the environment and the user's Docker contexts.
        logger.info("docker discovery: trying %s at %s", candidate.source, printable(candidate.location))
        # A socket root configured is root's choice; any other must be root's or the user's whose files were read.
        owner_uid = None if candidate.source in ROOT_CONFIGURED_SOURCES else environment.invoking_uid()
        outcome = await _check(candidate, probe, owner_uid)
        attempts.append(DiscoveryAttempt(candidate.source, candidate.location, outcome or "ok"))
        if outcome is None and candidate.address is not None:
            logger.info("docker discovery: using %s at %s", candidate.source, printable(candidate.location))
            return DockerEndpoint(candidate.address, candidate.source, tuple(attempts))
        logger.info(
            "docker discovery: %s at %s: %s", candidate.source, printable(candidate.location), printable(outcome or "")
        )
    raise DiscoveryError(tuple(attempts))


async def _check(candidate: Candidate, probe: Probe, owner_uid: int | None) -> str | None:
    if candidate.problem is not None or candidate.address is None:
        return candidate.problem or "no address"
    if candidate.address.socket_path is not None:
        problem = socket_file_problem(Path(candidate.address.socket_path), owner_uid=owner_uid)
        if problem is not None:
            return problem
    return await probe(candidate.address)


def socket_file_problem(path: Path, *, owner_uid: int | None = None) -> str | None:
    """Why `path` cannot be a daemon socket (missing, dangling symlink, not a socket, with `owner_uid` owned by
    someone else than root or that user), or None if it may be one."""
    target_stat = _stat_through_symlink(path)
    if isinstance(target_stat, str):
        return target_stat
    if not stat.S_ISSOCK(target_stat.st_mode):
        return "exists but is not a socket"
    if owner_uid is not None and target_stat.st_uid not in (0, owner_uid):
        # Whoever owns the socket serves the daemon behind it: root talks to no third user's daemon.
        return f"owned by uid {target_stat.st_uid}, neither root nor uid {owner_uid}"
    return None


def _stat_through_symlink(path: Path) -> os.stat_result | str:
    """The status of what `path` leads to, or why there is none (missing, dangling symlink, ...)."""
    try:
        link_stat = path.lstat()
    except FileNotFoundError:
        return "does not exist"
    except OSError as error:
        return f"cannot look at it: {error.strerror}"
    if not stat.S_ISLNK(link_stat.st_mode):
        return link_stat
    try:
        return path.stat()
    except FileNotFoundError:
        return f"dangling symlink to {os.readlink(path)}"
    except OSError as error:
        return f"cannot follow symlink: {error.strerror}"


def _candidate_for_url(source: str, url: str) -> Candidate:
    try:
        address = DaemonAddress.parse(url)
    except InvalidDaemonAddress as error:
        return Candidate(source, url, problem=error.message)
    return Candidate(source, url, address)


def _colima_source(socket: Path) -> str:
    return f"Colima profile {socket.parent.name!r}"


def _lima_source(socket: Path) -> str:
    return f"Lima instance {socket.parents[1].name!r}"


def _colima_sockets(home: Path) -> list[Path]:
    found: list[Path] = []
    for root in (home / ".colima", home / ".config" / "colima"):
        profiles = _sorted_glob(root, "*/docker.sock")
        # `colima start` without --profile uses "default": the one most users mean.
        profiles.sort(key=lambda path: path.parent.name != "default")
        found += profiles
    return found


def _owned_podman5_sockets(env: DiscoveryEnvironment) -> list[Path]:
    """Podman 5 machine sockets ($TMPDIR/podman/<machine>-api.sock) of the invoking user. Under sudo TMPDIR is
    root's, so every user's temporary directory is searched and only sockets the invoking user owns are kept."""
    owned: list[Path] = []
    for path in _sorted_glob(env.darwin_temp_root, "*/*/T/podman/*-api.sock"):
        try:
            if path.lstat().st_uid == env.invoking_uid():
                owned.append(path)
        except OSError:
            continue
    return owned


def _sorted_glob(root: Path, pattern: str) -> list[Path]:
    try:
        return sorted(root.glob(pattern))
    except OSError:
        return []


class Runtime(enum.Enum):
    """The product that serves the Docker API; decides where the VM is and how the host is reachable from it."""

    DOCKER_DESKTOP = "Docker Desktop"
    COLIMA = "Colima"
    RANCHER_DESKTOP = "Rancher Desktop"
    ORBSTACK = "OrbStack"
    LIMA = "Lima"
    PODMAN = "Podman"
    DOCKER_ENGINE = "Docker Engine"


# Socket path fragments of each product, for when /info does not tell (e.g. a renamed VM).
_SOCKET_HINTS = (
    ("/.colima/", Runtime.COLIMA),
    ("/.config/colima/", Runtime.COLIMA),
    ("/.rd/", Runtime.RANCHER_DESKTOP),
    ("/.orbstack/", Runtime.ORBSTACK),
    ("/.lima/", Runtime.LIMA),
    ("/.docker/run/", Runtime.DOCKER_DESKTOP),
    ("/.docker/desktop/", Runtime.DOCKER_DESKTOP),
    ("podman", Runtime.PODMAN),
)


def detect_runtime(version: Version, info: Info, address: DaemonAddress | None = None) -> Runtime:
    """Name the product from what the daemon says about itself, then from the socket path."""
    operating_system = info.operating_system.lower()
    vm_name = info.name.lower()
    # Colima names its VM "colima" (default profile) or "colima-<profile>"; Rancher Desktop's Lima VM is
    # "lima-rancher-desktop"; plain Lima instances are "lima-<instance>". First match wins.
    rules = (
        ("Podman Engine" in version.component_names or "podman" in version.platform_name.lower(), Runtime.PODMAN),
        (operating_system.startswith("docker desktop"), Runtime.DOCKER_DESKTOP),
        ("orbstack" in operating_system or vm_name == "orbstack", Runtime.ORBSTACK),
        (vm_name == "colima" or vm_name.startswith("colima-"), Runtime.COLIMA),
        ("rancher-desktop" in vm_name or "rancher desktop" in operating_system, Runtime.RANCHER_DESKTOP),
        (vm_name.startswith("lima-"), Runtime.LIMA),
    )
    for matches, runtime in rules:
        if matches:
            return runtime
    if address is not None and address.socket_path is not None:
        for fragment, runtime in _SOCKET_HINTS:
            if fragment in address.socket_path:
                return runtime
    return Runtime.DOCKER_ENGINE
