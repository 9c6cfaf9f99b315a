"""The end-to-end lab of the dmnc service: the real `dmnc` command in a "host" namespace, dockerd in a "VM" one.

    host netns                                  VM netns (dockerd's)
    dmnc run  --udp-->  veth 10.204.0.1  <-->  veth 10.204.0.2  <--  chip0 (wireguard-go fallback container)
    dmnc0 (TUN) + routes to container subnets                      docker0 / br-* bridges, containers

The VM setup container is the lab image built from the host's binaries (no registry here); this kernel has no
WireGuard, so the VM end runs in the userspace fallback container, as on a VM kernel without the module.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import dmnc_command, require_root, require_tools
from tests.lab.dockerd import BUSYBOX_REFERENCE, EngineProcess, import_busybox_image, running_dockerd
from tests.lab.netns import Netns, add_veth, netns
from tests.lab.setup_image import LAB_SETUP_IMAGE, import_setup_image
from tests.lab.wait import wait_until

HOST_ADDRESS = "10.204.0.1/24"
VM_ADDRESS = "10.204.0.2/24"
PAGE = "hello-through-dmnc"
HTTP_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 10.0


@dataclass
class ServiceLab:
    engine: EngineProcess
    host: Netns
    vm: Netns
    workdir: Path

    @property
    def config_file(self) -> Path:
        return self.workdir / "config.toml"

    @property
    def control_socket(self) -> Path:
        return self.workdir / "dmnc.sock"

    def engine_request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        transport = httpx.HTTPTransport(uds=str(self.engine.socket_path))
        with httpx.Client(transport=transport, base_url="http://docker", timeout=30.0) as client:
            response = client.request(method, path, **kwargs)
            response.raise_for_status()
            return response


@contextlib.contextmanager
def service_lab(engine: EngineProcess, host: Netns, workdir: Path) -> Iterator[ServiceLab]:
    vm = Netns(engine.netns)  # owned by running_dockerd
    add_veth(host, vm, HOST_ADDRESS, VM_ADDRESS)
    import_setup_image(engine.socket_path)
    import_busybox_image(engine.socket_path)
    (workdir / "config.toml").write_text("", encoding="utf-8")  # keeps the machine's /etc/dmnc out of the test
    yield ServiceLab(engine, host, vm, workdir)


@contextlib.contextmanager
def open_service_lab(prefix: str) -> Iterator[ServiceLab]:
    """A private dockerd in its "VM" namespace, a "host" namespace and a work directory, as the service tests use."""
    require_root()
    require_tools("ip", "dockerd", "wireguard-go", "wg", "iptables", "curl", "ldd", "busybox")
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as workdir,
        running_dockerd() as engine,
        netns("dmhost") as host,
        service_lab(engine, host, Path(workdir)) as built,
    ):
        yield built


class DmncProcess:
    """`dmnc run` inside the host namespace, its log in a file."""

    def __init__(
        self, lab: ServiceLab, *extra: str, env: dict[str, str] | None = None, command: Sequence[str] | None = None
    ) -> None:
        self.lab = lab
        self.log_path = lab.workdir / f"dmnc-{time.monotonic_ns()}.log"
        docker_host = [] if "--docker-host" in extra else ["--docker-host", f"unix://{lab.engine.socket_path}"]
        argv = [
            *(dmnc_command() if command is None else command),
            "run",
            *docker_host,
            "--endpoint",
            HOST_ADDRESS.split("/", maxsplit=1)[0],
            "--setup-image",
            LAB_SETUP_IMAGE,
            "--control-socket",
            str(lab.control_socket),
            "--config",
            str(lab.config_file),
            "-v",
            *extra,
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                lab.host.command(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=Path(__file__).resolve().parents[3],
            )
        self.started_at = time.monotonic()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"dmnc exited ({self.process.returncode}) before {text!r}:\n{self.log()}")
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} in dmnc's log after {timeout} s:\n{self.log()}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send `signum` and wait for the exit code (raises if it takes longer than EXIT_TIMEOUT_S)."""
        self.process.send_signal(signum)
        return self.process.wait(timeout=EXIT_TIMEOUT_S)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def running_dmnc(
    lab: ServiceLab, *extra: str, env: dict[str, str] | None = None, command: Sequence[str] | None = None
) -> Iterator[DmncProcess]:
    dmnc = DmncProcess(lab, *extra, env=env, command=command)
    try:
        yield dmnc
    except BaseException:
        print(f"--- dmnc log ({dmnc.log_path}):\n{dmnc.log()[-6000:]}")  # shown by pytest for the failed test
        raise
    finally:
        dmnc.kill()


LAUNCHER = Path(__file__).resolve().parents[2] / "lab" / "netns_cgroups_exec.py"


def restart_dockerd(lab: ServiceLab) -> subprocess.Popen[bytes]:
    """SIGKILL the lab's dockerd and start it again with the same command line in the same namespace.

    The new daemon is stopped with the namespace (running_dockerd kills everything in it at teardown).
    """
    argv = Path(f"/proc/{lab.engine.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    # The daemon and its containerd die together, as in a daemon crash; container shims live on, as they do there.
    children = _children(lab.engine.pid)
    lab.engine.kill()
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{lab.engine.pid}").exists() or _is_zombie(lab.engine.pid), 10, "dockerd gone")
    arguments = [part.decode() for part in argv]
    # Killed daemons leave pid files behind; the new dockerd refuses to start over its own and waits forever for a
    # containerd it believes alive (the killed one may linger as a zombie here, where nothing reaps orphans).
    for option, relative in (("--pidfile", ""), ("--exec-root", "containerd/containerd.pid")):
        if option in arguments:
            (Path(arguments[arguments.index(option) + 1]) / relative).unlink(missing_ok=True)
    with (lab.workdir / "dockerd-restarted.log").open("ab") as log:
        process = subprocess.Popen(
            lab.vm.command([sys.executable, str(LAUNCHER), "--", *arguments]),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    lab.vm.processes.append(process)
    wait_until(lambda: _engine_answers(lab), 60, "restarted dockerd answers /_ping")
    return process


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _engine_answers(lab: ServiceLab) -> bool:
    try:
        return lab.engine_request("GET", "/_ping").status_code == 200
    except httpx.HTTPError:
        return False


def start_web_container(lab: ServiceLab, network: str | None = None) -> str:
    """A busybox httpd serving PAGE, on `network` (default bridge when None); returns its IPv4 address."""
    command = f"mkdir -p /www && echo {PAGE} > /www/index.html && exec httpd -f -p 80 -h /www"
    body: dict[str, Any] = {"Image": BUSYBOX_REFERENCE, "Cmd": ["sh", "-c", command]}
    if network is not None:
        body["HostConfig"] = {"NetworkMode": network}
    created = lab.engine_request("POST", "/containers/create", json=body).json()
    lab.engine_request("POST", f"/containers/{created['Id']}/start")
    settings = lab.engine_request("GET", f"/containers/{created['Id']}/json").json()["NetworkSettings"]
    address: str = settings["Networks"][network or "bridge"]["IPAddress"]
    return address


def create_network(lab: ServiceLab, name: str, subnet: str, *, internal: bool = False) -> str:
    body = {"Name": name, "Internal": internal, "IPAM": {"Config": [{"Subnet": subnet}]}}
    network_id: str = lab.engine_request("POST", "/networks/create", json=body).json()["Id"]
    return network_id


def http_get(lab: ServiceLab, address: str, timeout: float = HTTP_TIMEOUT_S) -> float:
    """Seconds until `http://address/` answered PAGE from the host namespace; AssertionError if it never did."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        result = lab.host.run(["curl", "-s", "--max-time", "2", f"http://{address}/"], check=False)
        if result.returncode == 0 and PAGE in result.stdout:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"http://{address}/ did not answer from the host namespace within {timeout} s")


def host_routes(lab: ServiceLab) -> list[str]:
    return lab.host.run(["ip", "-o", "route", "show", "table", "main"]).stdout.splitlines()


def dmnc_routes(lab: ServiceLab) -> list[str]:
    """Routes through a dmnc TUN (dmnc0, dmnc1, ...)."""
    return [line for line in host_routes(lab) if " dev dmnc" in line]


def status_json(lab: ServiceLab) -> dict[str, Any]:
    result = lab.host.run(
        [*dmnc_command(), "status", "--json", "--control-socket", str(lab.control_socket)],
        check=False,
    )
    assert result.returncode == 0, result.stderr
    status: dict[str, Any] = json.loads(result.stdout)
    return status


def vm_leftovers(lab: ServiceLab) -> list[str]:
    """Everything of dmnc's still in the VM: chip0, rules naming it or the host tunnel address, the fallback."""
    found = []
    if lab.vm.run(["ip", "link", "show", "chip0"], check=False).returncode == 0:
        found.append("interface chip0")
    for save in ("iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save", "ip6tables-legacy-save"):
        result = lab.vm.run([save], check=False)
        found.extend(
            f"{save}: {line}"
            for line in result.stdout.splitlines()
            if line.startswith("-A ")
            and any(marker in line for marker in ("chip0", "10.33.33.1", "fd33:33:33::1", "DMNC-TO-HOST"))
        )
    containers = lab.engine_request("GET", "/containers/json", params={"all": "1"}).json()
    found.extend(
        f"container {name}"
        for container in containers
        for name in container.get("Names", [])
        if "dmnc" in name and "busybox" not in container.get("Image", "")
    )
    return found
