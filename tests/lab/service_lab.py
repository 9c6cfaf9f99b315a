"""The end-to-end lab of the dmnc service: the real `dmnc` command in a "host" namespace, dockerd in a "VM" one.

    host netns                                  VM netns (dockerd's)
    dmnc run  --udp-->  veth 10.204.0.1  <-->  veth 10.204.0.2  <--  chip0 (wireguard-go fallback container)
    dmnc0 (TUN) + routes to container subnets                      docker0 / br-* bridges, containers
              direct:   veth 10.205.0.1  <-->  veth 10.205.0.2      (the direct path's link)

Two links, as on Colima: the first carries the tunnel's UDP and gives the host no connected subnet holding the VM's
address (/32 addresses and a device route each way, like a NAT'ed VM network), so it is never a direct path; the
second is a shared /24, the direct path `--path auto` finds. Tests remove and restore it with `remove_direct_link`
and `restore_direct_link` (same interface names, so the VM's rules keep matching). Every test names its path
(`running_dmnc` refuses to start without `--path`, or `path` in the lab's config file): `--path tunnel` where it
tests the tunnel.

The VM setup container is the lab image built from the host's binaries (no registry here); this kernel has no
WireGuard, so the VM end runs in the userspace fallback container, as on a VM kernel without the module.

Building a lab (namespaces, dockerd, two image imports) takes seconds, so a test module shares one, and each test
gets it clean. The fixtures (registered for the whole suite by tests/conftest.py):

    def test_x(service_lab: ServiceLab) -> None: ...       # the module's shared lab, reset after the test
    def test_y(own_service_lab: ServiceLab) -> None: ...   # a lab of its own, for tests that break the lab itself
                                                           # (e.g. restart_dockerd)

After each test the shared lab is reset to how it was built: the containers, networks and images the test added and
the host routes it added are removed, processes left in the host namespace are killed, and each test has a fresh work
directory (config file, control socket, logs). Then the reset is verified; if anything is still different (a dmnc
killed before it removed the VM side, a replaced dockerd, a removed image), the lab is torn down and the next test
gets a new one, so sharing never leaks state from one test into another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dmnc.vm.shims import SHIM_LINK_PREFIX
from tests.conftest import dmnc_command, require_root, require_tools
from tests.lab.dockerd import (
    BUSYBOX_REFERENCE,
    EngineProcess,
    children_by_parent,
    import_busybox_image,
    is_running,
    running_dockerd,
)
from tests.lab.netns import LabCommandError, Netns, add_veth, netns, run_host, unique_suffix
from tests.lab.setup_image import LAB_SETUP_IMAGE, import_setup_image
from tests.lab.wait import WaitTimeout, wait_until

HOST_ADDRESS = "10.204.0.1/24"
VM_ADDRESS = "10.204.0.2/24"
DIRECT_HOST_ADDRESS = "10.205.0.1/24"
DIRECT_VM_ADDRESS = "10.205.0.2/24"
PAGE = "hello-through-dmnc"
HTTP_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 10.0
ENGINE_TIMEOUT_S = 30.0
# The firewall rule dumps vm_leftovers reads in the VM (both iptables flavours, both families).
VM_RULE_SAVERS = ("iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save", "ip6tables-legacy-save")
# What names dmnc's rules in the VM: its interface, the host's tunnel addresses, its own chains (DMNC-*), its shims.
VM_RULE_MARKERS = ("chip0", "10.33.33.1", "fd33:33:33::1", "DMNC-", SHIM_LINK_PREFIX)
# The nftables table setup.sh keeps when the VM's Docker uses its nftables firewall backend (`inet dmnc`).
VM_NFT_TABLE = "dmnc"
# Longer than removals in flight take; a lab still different after it is rebuilt (seconds), never a test failure.
RESET_TIMEOUT_S = 5.0
# What the lab and the tests run on it need on the host (tests/lab/install.sh installs them).
LAB_TOOLS = ("ip", "dockerd", "wireguard-go", "wg", "iptables", "nft", "curl", "ldd", "busybox", "nc", "ss")
HOST_NETNS_PREFIX = "dmsvc"


@dataclass(frozen=True)
class ServiceLab:
    engine: EngineProcess
    host: Netns
    vm: Netns
    workdir: Path
    # The direct path's veth: its host and VM interface names (see the module docstring).
    direct_interfaces: tuple[str, str] = ("", "")

    @property
    def config_file(self) -> Path:
        return self.workdir / "config.toml"

    @property
    def control_socket(self) -> Path:
        return self.workdir / "dmnc.sock"

    def engine_request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        transport = httpx.HTTPTransport(uds=str(self.engine.socket_path))
        with httpx.Client(transport=transport, base_url="http://docker", timeout=ENGINE_TIMEOUT_S) as client:
            response = client.request(method, path, **kwargs)
            response.raise_for_status()
            return response


def _fresh_workdir(lab: ServiceLab, workdir: Path) -> ServiceLab:
    """`lab` with its own work directory and an empty config file (keeps the machine's /etc/dmnc out of the test)."""
    workdir.mkdir(parents=True)
    (workdir / "config.toml").write_text("", encoding="utf-8")
    return dataclasses.replace(lab, workdir=workdir)


@contextlib.contextmanager
def new_service_lab() -> Iterator[ServiceLab]:
    """Build a service lab (skips, or fails in CI, when a prerequisite is missing); torn down on exit."""
    require_root()
    require_tools(*LAB_TOOLS)
    with (
        tempfile.TemporaryDirectory(prefix="dmnc-service-lab-") as workdir,
        running_dockerd() as engine,
        netns(HOST_NETNS_PREFIX) as host,
    ):
        vm = Netns(engine.netns)  # owned by running_dockerd
        add_tunnel_link(host, vm)
        suffix = unique_suffix()
        lab = ServiceLab(engine, host, vm, Path(workdir), (f"dh{suffix}", f"dv{suffix}"))
        restore_direct_link(lab)
        import_setup_image(engine.socket_path)
        import_busybox_image(engine.socket_path)
        yield _fresh_workdir(lab, Path(workdir) / "lab")


def add_tunnel_link(host: Netns, vm: Netns) -> None:
    """The link the tunnel's UDP crosses: each end a /32 with a device route to the other, so neither holds a
    connected subnet with the other's address (the host reaches the VM's address, but not as a direct path)."""
    host_ip, vm_ip = HOST_ADDRESS.split("/", maxsplit=1)[0], VM_ADDRESS.split("/", maxsplit=1)[0]
    link = add_veth(host, vm, f"{host_ip}/32", f"{vm_ip}/32")
    host.run(["ip", "route", "add", f"{vm_ip}/32", "dev", link.left_interface])
    vm.run(["ip", "route", "add", f"{host_ip}/32", "dev", link.right_interface])


def direct_link_present(lab: ServiceLab) -> bool:
    return lab.host.run(["ip", "link", "show", lab.direct_interfaces[0]], check=False).returncode == 0


def remove_direct_link(lab: ServiceLab) -> None:
    """Delete the direct path's veth (both ends), as a VM network going away."""
    lab.host.run(["ip", "link", "del", lab.direct_interfaces[0]])


def restore_direct_link(lab: ServiceLab) -> None:
    """(Re)create the direct path's veth with its names and addresses, unless it is there."""
    if direct_link_present(lab):
        return
    host_interface, vm_interface = lab.direct_interfaces
    run_host(
        ["ip", "link", "add", host_interface, "netns", lab.host.name, "type", "veth", "peer", "name", vm_interface,
         "netns", lab.vm.name]
    )  # fmt: skip
    for namespace, interface, address in (
        (lab.host, host_interface, DIRECT_HOST_ADDRESS),
        (lab.vm, vm_interface, DIRECT_VM_ADDRESS),
    ):
        namespace.run(["ip", "addr", "add", address, "dev", interface])
        namespace.run(["ip", "link", "set", interface, "up"])


@dataclass(frozen=True)
class LabState:
    """What a test may change in a service lab, by identity."""

    containers: frozenset[str]
    networks: frozenset[str]
    images: frozenset[str]
    host_routes: frozenset[str]
    host_processes: frozenset[int]
    vm_leftovers: tuple[str, ...]
    direct_link: bool = True


def lab_state(lab: ServiceLab) -> LabState:
    containers = lab.engine_request("GET", "/containers/json", params={"all": "1"}).json()
    networks = lab.engine_request("GET", "/networks").json()
    images = lab.engine_request("GET", "/images/json").json()
    return LabState(
        containers=frozenset(container["Id"] for container in containers),
        networks=frozenset(network["Id"] for network in networks),
        images=frozenset(image["Id"] for image in images),
        host_routes=frozenset(host_routes(lab)),
        host_processes=_host_processes(lab),
        vm_leftovers=tuple(vm_leftovers(lab)),
        direct_link=direct_link_present(lab),
    )


def _host_processes(lab: ServiceLab) -> frozenset[int]:
    return frozenset(int(pid) for pid in run_host(["ip", "netns", "pids", lab.host.name]).stdout.split())


def reset_service_lab(lab: ServiceLab, baseline: LabState) -> list[str]:
    """Remove what a test added to `lab` since `baseline`, until nothing differs or RESET_TIMEOUT_S passed; return
    what still differs (empty when clean)."""
    if not is_running(lab.engine.pid):
        return [f"dockerd {lab.engine.pid} is gone (restarted or crashed)"]
    differences: list[str] = []

    def reset_once() -> bool:
        state = lab_state(lab)
        differences[:] = _differences(state, baseline)
        _undo_changes(lab, state, baseline)  # also when the lab is given up: its teardown is quicker without them
        if any(leftover.startswith(VM_RULE_SAVERS) for leftover in state.vm_leftovers):
            raise _CannotReset  # the reset removes no firewall rules: no point waiting
        return not differences

    try:
        # Some removals finish a moment later (a container dmnc stopped is still being auto-removed and refuses a
        # second removal; a killed process is still exiting): each round removes what is still there.
        wait_until(reset_once, RESET_TIMEOUT_S, "the service lab to be as built", interval=0.2)
    except (WaitTimeout, _CannotReset):
        return differences
    except (httpx.HTTPError, OSError, subprocess.SubprocessError, LabCommandError) as error:
        return [f"reset failed: {error!r}"]
    return []


class _CannotReset(Exception):
    """The lab differs in a way the reset does not undo."""


def _differences(state: LabState, baseline: LabState) -> list[str]:
    return [
        f"{field.name}: {getattr(state, field.name)!r}, was {getattr(baseline, field.name)!r}"
        for field in dataclasses.fields(LabState)
        if getattr(state, field.name) != getattr(baseline, field.name)
    ]


def _undo_changes(lab: ServiceLab, now: LabState, baseline: LabState) -> None:
    """One round of the reset: remove what `now` has beyond `baseline`."""
    for pid in now.host_processes - baseline.host_processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    removals = [
        *(f"/containers/{container}" for container in now.containers - baseline.containers),
        *(f"/networks/{network}" for network in now.networks - baseline.networks),
        *(f"/images/{image}" for image in now.images - baseline.images),
    ]
    for path in removals:
        with contextlib.suppress(httpx.HTTPStatusError):  # gone meanwhile, or already being removed
            lab.engine_request("DELETE", path, params={"force": "1"})
    if not now.direct_link:
        restore_direct_link(lab)
    for route in now.host_routes - baseline.host_routes:
        lab.host.run(["ip", "route", "del", *route.split()], check=False)


class LabRebuiltWarning(UserWarning):
    """A test left the shared service lab in a state the reset could not undo: the next test gets a new lab."""


class SharedServiceLab:
    """One service lab for the tests of a module, reset after each; rebuilt when a reset cannot make it clean."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._lab: ServiceLab | None = None
        self._baseline: LabState | None = None
        self._tests = itertools.count(1)

    @contextlib.contextmanager
    def for_test(self) -> Iterator[ServiceLab]:
        if self._lab is None:
            self._lab = self._stack.enter_context(new_service_lab())
            self._baseline = lab_state(self._lab)
        lab, baseline = self._lab, self._baseline
        assert baseline is not None
        # Short names: the control socket's path must fit sockaddr_un's sun_path (108 bytes, unix(7)).
        try:
            yield _fresh_workdir(lab, lab.workdir.parent / f"test-{next(self._tests):02d}")
        finally:
            differences = reset_service_lab(lab, baseline)
            if differences:
                # A warning, not a print: pytest lists it in the summary even when the test passed.
                warnings.warn(LabRebuiltWarning("; ".join(differences)), stacklevel=1)
                self.close()

    def close(self) -> None:
        self._lab = self._baseline = None
        self._stack.close()


@pytest.fixture(scope="module")
def shared_service_lab() -> Iterator[SharedServiceLab]:
    """The service lab the tests of one module share (built when the first test asks for it)."""
    shared = SharedServiceLab()
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def service_lab(shared_service_lab: SharedServiceLab) -> Iterator[ServiceLab]:
    """The module's shared service lab, with a work directory of this test's own; reset after the test."""
    with shared_service_lab.for_test() as lab:
        yield lab


@pytest.fixture
def own_service_lab() -> Iterator[ServiceLab]:
    """A service lab for this test alone, for tests that break the lab itself (e.g. restart_dockerd)."""
    with new_service_lab() as lab:
        yield lab


class DmncProcess:
    """`dmnc run` inside the host namespace, its log in a file."""

    def __init__(
        self, lab: ServiceLab, *extra: str, env: dict[str, str] | None = None, command: Sequence[str] | None = None
    ) -> None:
        if "--path" not in extra and "path =" not in lab.config_file.read_text(encoding="utf-8"):
            raise ValueError("every end-to-end test names its path: pass --path tunnel, auto or direct")
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
                cwd=Path(__file__).resolve().parents[2],
            )
        self.started_at = time.monotonic()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        """Wait until `text` is in the log; fail at once, with the log, if dmnc exits first."""

        def logged() -> bool:
            if text in self.log():
                return True
            if self.process.poll() is not None:
                raise AssertionError(f"dmnc exited ({self.process.returncode}) before {text!r}:\n{self.log()}")
            return False

        wait_until(logged, timeout, f"{text!r} in dmnc's log", interval=0.1)

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


LAUNCHER = Path(__file__).with_name("netns_cgroups_exec.py")


def restart_dockerd(lab: ServiceLab) -> subprocess.Popen[bytes]:
    """SIGKILL the lab's dockerd and start it again with the same command line in the same namespace.

    The new daemon is stopped with the namespace (running_dockerd kills everything in it at teardown). The lab's
    `engine.pid` no longer names the daemon: only for a lab of the test's own (`own_service_lab`).
    """
    argv = Path(f"/proc/{lab.engine.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    # The daemon and its containerd die together, as in a daemon crash; container shims live on, as they do there.
    children = children_by_parent().get(lab.engine.pid, [])
    lab.engine.kill()
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    wait_until(lambda: not is_running(lab.engine.pid), 10, "dockerd gone")
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


def _engine_answers(lab: ServiceLab) -> bool:
    try:
        return lab.engine_request("GET", "/_ping").status_code == 200
    except httpx.HTTPError:
        return False


def start_web_container(lab: ServiceLab, network: str | None = None) -> str:
    """A busybox httpd serving PAGE, on `network` (default bridge when None); returns its IPv4 address."""
    return start_web_container_dual_stack(lab, network)[0]


def start_web_container_dual_stack(lab: ServiceLab, network: str | None = None) -> tuple[str, str]:
    """A busybox httpd serving PAGE, on `network` (default bridge when None); returns its IPv4 and IPv6 addresses
    (the IPv6 one empty on a network without IPv6, as the engine reports it)."""
    command = f"mkdir -p /www && echo {PAGE} > /www/index.html && exec httpd -f -p 80 -h /www"
    return start_container(lab, command, network)


def start_container(
    lab: ServiceLab, command: str, network: str | None = None, image: str = BUSYBOX_REFERENCE
) -> tuple[str, str]:
    """A container of `image` running `sh -c command` on `network` (default bridge when None); returns its IPv4 and
    IPv6 addresses (the IPv6 one empty on a network without IPv6, as the engine reports it)."""
    body: dict[str, Any] = {"Image": image, "Cmd": ["sh", "-c", command]}
    if network is not None:
        body["HostConfig"] = {"NetworkMode": network}
    created = lab.engine_request("POST", "/containers/create", json=body).json()
    lab.engine_request("POST", f"/containers/{created['Id']}/start")
    settings = lab.engine_request("GET", f"/containers/{created['Id']}/json").json()["NetworkSettings"]
    endpoint = settings["Networks"][network or "bridge"]
    return str(endpoint["IPAddress"]), str(endpoint.get("GlobalIPv6Address") or "")


def create_network(lab: ServiceLab, name: str, *subnets: str, internal: bool = False) -> str:
    """A bridge network with these subnets; IPv6 is enabled when one of them is IPv6 (`--ipv6 --subnet ...`)."""
    body = {
        "Name": name,
        "Internal": internal,
        "EnableIPv6": any(":" in subnet for subnet in subnets),
        "IPAM": {"Config": [{"Subnet": subnet} for subnet in subnets]},
    }
    network_id: str = lab.engine_request("POST", "/networks/create", json=body).json()["Id"]
    return network_id


def http_get(lab: ServiceLab, address: str, timeout: float = HTTP_TIMEOUT_S) -> float:
    """Seconds until `http://address/` answered PAGE from the host namespace; WaitTimeout if it never did."""
    started = time.monotonic()

    url = f"http://[{address}]/" if ":" in address else f"http://{address}/"

    def answered() -> bool:
        result = lab.host.run(["curl", "-s", "-g", "--max-time", "2", url], check=False)
        return result.returncode == 0 and PAGE in result.stdout

    wait_until(answered, timeout, f"{url} to answer from the host namespace", interval=0.2)
    return time.monotonic() - started


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
    """Everything of dmnc's still in the VM: chip0, macvlan/ipvlan shim links, rules naming them or the host tunnel
    address, dmnc's nftables table, the fallback."""
    found = []
    if lab.vm.run(["ip", "link", "show", "chip0"], check=False).returncode == 0:
        found.append("interface chip0")
    links = lab.vm.run(["ip", "-o", "link", "show"]).stdout.splitlines()
    found.extend(f"shim link {line.split(':')[1].strip()}" for line in links if f": {SHIM_LINK_PREFIX}" in line)
    tables = lab.vm.run(["nft", "list", "tables"], check=False).stdout.splitlines()
    found.extend(f"nftables {line}" for line in tables if line.split()[-1:] == [VM_NFT_TABLE])
    for save in VM_RULE_SAVERS:
        result = lab.vm.run([save], check=False)
        found.extend(
            f"{save}: {line}"
            for line in result.stdout.splitlines()
            if line.startswith("-A ") and any(marker in line for marker in VM_RULE_MARKERS)
        )
    containers = lab.engine_request("GET", "/containers/json", params={"all": "1"}).json()
    found.extend(
        f"container {name}"
        for container in containers
        for name in container.get("Names", [])
        if "dmnc" in name and "busybox" not in container.get("Image", "")
    )
    return found
