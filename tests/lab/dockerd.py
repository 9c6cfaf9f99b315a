"""Lab fixture: a private container engine (dockerd or Podman) in its own network namespace.

Nothing here touches the machine's own engine state: each engine gets a fresh network namespace, a unique temporary
directory holding its data root, run root, pid file and API socket, and the vfs storage driver (no overlay mounts).
Teardown stops every process in the namespace by PID, deletes the namespace and removes the directory, also when the
test failed.

Usage (plain context managers, so any test or fixture can use them; the engines start in ~1 s):

    with running_dockerd() as engine:          # or running_podman()
        image_id = import_busybox_image(engine.socket_path)
        ...                                    # talk to engine.socket_path (unix socket, HTTP)
        engine.kill()                          # optional: SIGKILL the daemon to test a lost daemon

`import_busybox_image` makes a tiny image from the host's busybox-static (no registry needed: the API's
`POST /images/create?fromSrc=-` import, like `docker import`). `rootfs_tar` + `import_image` build images with any
other host files (e.g. `ip`, `wg` and their libraries for VM-side tests).

Needs root, `ip`, `dockerd` (docker.io) or `podman`, and /bin/busybox (busybox-static); callers check these with
`tests.conftest.require_root/require_tools` first.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

EngineKind = Literal["dockerd", "podman"]

BUSYBOX_PATH = Path("/bin/busybox")
BUSYBOX_REFERENCE = "dmnc-test/busybox:latest"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
_LAUNCHER = Path(__file__).with_name("netns_cgroups_exec.py")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class EngineStartError(RuntimeError):
    """The engine exited or did not answer /_ping in time (the message carries the tail of its log), or an image
    import gave no image."""


@dataclass(frozen=True)
class EngineProcess:
    """A running private engine: where its API socket is and how to reach its namespace and log."""

    kind: EngineKind
    netns: str
    workdir: Path
    socket_path: Path
    log_path: Path
    pid: int

    @property
    def base_url(self) -> str:
        """Host part for HTTP clients on `socket_path` (the host name is ignored by the daemon)."""
        return "http://docker"

    def kill(self) -> None:
        """SIGKILL the daemon process now (children are reaped at teardown), to simulate a crashed daemon."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"


def unique_suffix() -> str:
    """6 hex digits, to keep names of concurrent or crashed runs apart (and interface names under 15 chars)."""
    return secrets.token_hex(3)


@contextlib.contextmanager
def network_namespace(prefix: str = "dmnc") -> Iterator[str]:
    """A fresh network namespace with loopback up; on exit every process still in it is killed, then it is deleted."""
    name = f"{prefix}-{unique_suffix()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        _kill_namespace_processes(name)
        subprocess.run(["ip", "netns", "delete", name], check=False)


@contextlib.contextmanager
def running_dockerd() -> Iterator[EngineProcess]:
    """Start Debian's dockerd in a new namespace with private state; yield once it answers /_ping."""
    # Exit order matters: the namespace's processes die first, then their cgroups go, then the files.
    with (
        _private_workdir("dmnc-dockerd-") as workdir,
        _container_cgroups_removed(workdir / "data" / "containers", "docker/{}"),
        network_namespace("dmnc-dk") as netns,
    ):
        socket_path = workdir / "docker.sock"
        # Our own daemon.json: ignores the machine's /etc/docker/daemon.json, and keeps dockerd 20.10 from writing
        # its (deprecated, config-file-only) identity key to /etc/docker/key.json.
        config_path = workdir / "daemon.json"
        config_path.write_text(json.dumps({"deprecated-key-path": str(workdir / "key.json")}))
        command = [
            "dockerd",
            "--config-file", str(config_path),
            "--data-root", str(workdir / "data"),
            "--exec-root", str(workdir / "exec"),
            "--pidfile", str(workdir / "dockerd.pid"),
            "-H", f"unix://{socket_path}",
            "--storage-driver", "vfs",
        ]  # fmt: skip
        with _engine(kind="dockerd", netns=netns, workdir=workdir, socket_path=socket_path, command=command) as engine:
            yield engine


@contextlib.contextmanager
def running_podman() -> Iterator[EngineProcess]:
    """Start `podman system service` (Docker-compatible API) in a new namespace with private storage and state."""
    with (
        _private_workdir("dmnc-podman-") as workdir,
        _container_cgroups_removed(workdir / "root" / "vfs-containers", "libpod_parent/libpod-{}"),
        network_namespace("dmnc-pm") as netns,
    ):
        socket_path = workdir / "podman.sock"
        network_dir = workdir / "networks"
        network_dir.mkdir()
        # Podman raises a container's open-files and process limits to its own defaults (1048576, 32768), which fails
        # ("error setting rlimit type 7") where the lab's hard limits are lower and CAP_SYS_RESOURCE is missing.
        # Lowering a limit is always allowed, and test containers need few files and processes.
        ulimits = '"nofile=1024:1024", "nproc=1024:1024"'
        config_path = workdir / "containers.conf"
        config_path.write_text(f"[containers]\ndefault_ulimits = [{ulimits}]\n")
        command = [
            "podman",
            "--root", str(workdir / "root"),
            "--runroot", str(workdir / "runroot"),
            "--tmpdir", str(workdir / "tmp"),
            "--volumepath", str(workdir / "volumes"),
            "--network-config-dir", str(network_dir),
            "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "system", "service", "--time=0", f"unix://{socket_path}",
        ]  # fmt: skip
        environment = {**os.environ, "CONTAINERS_CONF": str(config_path)}
        with _engine(
            kind="podman",
            netns=netns,
            workdir=workdir,
            socket_path=socket_path,
            command=command,
            env=environment,
            # Podman names container network namespaces in /run/netns and leaves them there when it is killed.
            launcher_options=["--private-tmpfs", "/run/netns"],
        ) as engine:
            yield engine


def rootfs_tar(files: Mapping[str, Path | bytes], symlinks: Mapping[str, str] | None = None) -> bytes:
    """An uncompressed tar of a root filesystem: `files` maps paths in the image to host files or contents
    (all mode 0755), `symlinks` maps link paths to targets. Parent directories and /proc, /sys, /dev, /tmp, /etc are
    added so runtimes can mount over them."""
    buffer = io.BytesIO()
    directories = {"bin", "dev", "etc", "proc", "sys", "tmp"}
    for path in [*files, *(symlinks or {})]:
        parts = Path(path.lstrip("/")).parts[:-1]
        directories.update("/".join(parts[: index + 1]) for index in range(len(parts)))
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for directory in sorted(directories):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            archive.addfile(info)
        for path, source in files.items():
            content = source.read_bytes() if isinstance(source, Path) else source
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(content)
            info.mode = 0o755
            archive.addfile(info, io.BytesIO(content))
        for link, target in (symlinks or {}).items():
            info = tarfile.TarInfo(link.lstrip("/"))
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def busybox_rootfs_tar(extra_files: Mapping[str, Path | bytes] | None = None) -> bytes:
    """/bin/busybox plus a /bin symlink for each of its applets (sh, echo, cat, sleep, nc, ...), and `extra_files`
    (paths in the image -> host files or contents, as for `rootfs_tar`)."""
    applets = subprocess.run([str(BUSYBOX_PATH), "--list"], check=True, capture_output=True, text=True).stdout.split()
    symlinks = {f"/bin/{applet}": "busybox" for applet in applets if applet != "busybox"}
    return rootfs_tar({"/bin/busybox": BUSYBOX_PATH, **(extra_files or {})}, symlinks)


def import_image(socket_path: Path, rootfs: bytes, reference: str) -> str:
    """Import `rootfs` (a tar) as image `reference` ("repo:tag") through the engine API; return the image id.

    Podman 4.3's import ignores the tag (it names the image docker.io/REPO:latest), so the image is tagged
    explicitly afterwards; both engines end their answer with a progress line whose `status` is the new image ID."""
    repository, _, tag = reference.rpartition(":")
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://docker") as client:
        response = client.post(
            "/images/create",
            params={"fromSrc": "-", "repo": repository, "tag": tag},
            content=rootfs,
            headers={"Content-Type": "application/x-tar"},
            timeout=120.0,
        )
        response.raise_for_status()
        image_id = str(json.loads(response.text.strip().splitlines()[-1]).get("status", ""))
        if not image_id.startswith("sha256:"):
            raise EngineStartError(f"image import answered {response.text[:300]!r}")
        client.post(f"/images/{image_id}/tag", params={"repo": repository, "tag": tag}, timeout=30.0).raise_for_status()
        return image_id


def import_busybox_image(socket_path: Path, reference: str = BUSYBOX_REFERENCE) -> str:
    """Import the busybox-static image into the engine at `socket_path`; return its image id."""
    return import_image(socket_path, busybox_rootfs_tar(), reference)


@contextlib.contextmanager
def _container_cgroups_removed(containers_dir: Path, cgroup_pattern: str) -> Iterator[None]:
    """On exit, remove the cgroups of every container the engine stored in `containers_dir` (one directory per
    container ID). The engine removes them itself when it stops a container, but not when it was killed; container
    IDs are unique, so this never touches another engine's cgroups."""
    try:
        yield
    finally:
        container_ids = [entry.name for entry in containers_dir.iterdir()] if containers_dir.is_dir() else []
        for hierarchy in CGROUP_ROOT.iterdir() if container_ids else ():
            for container_id in container_ids:
                _remove_cgroup(hierarchy / cgroup_pattern.format(container_id))


def _remove_cgroup(path: Path) -> None:
    """rmdir a cgroup and its children, deepest first (cgroup directories hold only virtual files)."""
    if not path.is_dir():
        return
    for child in sorted((entry for entry in path.rglob("*") if entry.is_dir()), key=lambda entry: -len(entry.parts)):
        with contextlib.suppress(OSError):
            child.rmdir()
    for _attempt in range(20):
        try:
            path.rmdir()
        except OSError:
            # Killed tasks leave the cgroup a moment after SIGKILL.
            time.sleep(0.05)
        else:
            return


@contextlib.contextmanager
def _private_workdir(prefix: str) -> Iterator[Path]:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _engine(
    *,
    kind: EngineKind,
    netns: str,
    workdir: Path,
    socket_path: Path,
    command: list[str],
    env: Mapping[str, str] | None = None,
    launcher_options: Sequence[str] = (),
) -> Iterator[EngineProcess]:
    log_path = workdir / f"{kind}.log"
    with log_path.open("wb") as log:
        # `ip netns exec` execs the launcher, which execs the engine: the Popen PID is the engine's PID.
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, str(_LAUNCHER), *launcher_options, "--", *command],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    engine = EngineProcess(
        kind=kind, netns=netns, workdir=workdir, socket_path=socket_path, log_path=log_path, pid=process.pid
    )
    try:
        _wait_ready(engine, process)
        yield engine
    finally:
        if process.poll() is None:
            _remove_containers(engine)
        _stop(process)


def _wait_ready(engine: EngineProcess, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    transport = httpx.HTTPTransport(uds=str(engine.socket_path))
    with httpx.Client(transport=transport, base_url=engine.base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EngineStartError(f"{engine.kind} exited with {process.returncode}:\n{engine.log_tail()}")
            if engine.socket_path.exists():
                with contextlib.suppress(httpx.TransportError):
                    if client.get("/_ping").status_code == 200:
                        return
            time.sleep(0.1)
    raise EngineStartError(f"{engine.kind} not ready after {READY_TIMEOUT_S} s:\n{engine.log_tail()}")


def _remove_containers(engine: EngineProcess) -> None:
    """Force-remove (SIGKILL) every container first: on SIGTERM dockerd gives each running container its stop timeout
    (10 s unless set) before it exits, and busybox httpd as PID 1 ignores SIGTERM."""
    transport = httpx.HTTPTransport(uds=str(engine.socket_path))
    with (
        contextlib.suppress(httpx.HTTPError),
        httpx.Client(transport=transport, base_url=engine.base_url, timeout=STOP_TIMEOUT_S) as client,
    ):
        for container in client.get("/containers/json", params={"all": "1"}).json():
            client.delete(f"/containers/{container['Id']}", params={"force": "1"})


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _kill_namespace_processes(netns: str) -> None:
    """SIGKILL every process in `netns` and all their descendants: containerd, shims, conmon, and the containers
    they started (those live in namespaces of their own but are children of a shim or conmon). Returns once all
    of them have exited."""
    killed: set[int] = set()
    for _attempt in range(50):
        listed = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False)
        victims = _with_descendants({int(pid) for pid in listed.stdout.split()})
        if not victims:
            break
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed |= victims
        time.sleep(0.1)
    # Orphaned container processes leave the namespace's process tree before they are gone: wait for them too.
    for _attempt in range(50):
        if not any(is_running(pid) for pid in killed):
            return
        time.sleep(0.05)


def is_running(pid: int) -> bool:
    """True unless the process is gone or a zombie (dead, waiting for its new parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children_by_parent() -> dict[int, list[int]]:
    """Every process's PID under its parent's PID, read from /proc now."""
    children: dict[int, list[int]] = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue  # the process exited while we looked
        # Field 4 is the parent PID; the command name (field 2) may contain spaces, so split after its ")".
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(stat_path.parent.name))
    return children


def _with_descendants(roots: set[int]) -> set[int]:
    children = children_by_parent()
    found: set[int] = set()
    pending = list(roots)
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, []))
    return found
