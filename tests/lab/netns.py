"""Network namespace and veth helpers for lab tests.

Everything here is synchronous (subprocess) so it works from plain fixtures and from trio tests alike. Names are
unique per run (a random 6-hex suffix) so a crashed run never collides with the next one, and every context manager
cleans up even when the test body fails: processes it started are killed by PID, then the namespace is deleted
(which also destroys the interfaces inside it).

Typical use::

    with two_namespaces() as (left, right, link):
        left.run(["ping", "-c1", str(link.right_address.ip)])
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

# Linux IFNAMSIZ is 16 including the NUL (include/uapi/linux/if.h).
MAX_INTERFACE_NAME = 15
_KILL_GRACE_SECONDS = 3.0


class LabCommandError(RuntimeError):
    """A lab command (ip, wg, ...) failed; carries the command line and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} exited {returncode}: {stderr.strip()}")
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


def unique_suffix() -> str:
    """Six random hex digits: short enough for interface names, unique enough per run."""
    return secrets.token_hex(3)


def unique_name(prefix: str) -> str:
    name = f"{prefix}{unique_suffix()}"
    if len(name) > MAX_INTERFACE_NAME:
        raise ValueError(f"{name!r} is longer than {MAX_INTERFACE_NAME} characters")
    return name


def run_host(argv: Sequence[str], *, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in the root namespace; raise LabCommandError when `check` and it fails."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise LabCommandError(argv, result.returncode, result.stderr)
    return result


@dataclass
class Netns:
    """A network namespace created by the test, plus the processes started inside it."""

    name: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, argv: Sequence[str]) -> list[str]:
        """The argv that runs `argv` inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_host(self.command(argv), timeout=timeout, check=check)

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a long-running process inside the namespace; it is killed when the namespace is torn down."""
        process: subprocess.Popen[bytes] = subprocess.Popen(self.command(argv), **kwargs)  # type: ignore[call-overload]
        self.processes.append(process)
        return process

    def stop_processes(self) -> None:
        for process in self.processes:
            stop_process(process)
        self.processes.clear()

    def delete(self) -> None:
        self.stop_processes()
        # Anything else still running in the namespace was started from here (e.g. by a subprocess under test
        # that forked); kill those by PID so the namespace really goes away.
        leftover = run_host(["ip", "netns", "pids", self.name], check=False).stdout.split()
        for pid in leftover:
            run_host(["kill", "-9", pid], check=False)
        run_host(["ip", "netns", "delete", self.name], check=False)


def stop_process(process: subprocess.Popen[bytes], grace: float = _KILL_GRACE_SECONDS) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL; always reaps."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def netns(prefix: str = "dmnc") -> Iterator[Netns]:
    """A fresh namespace with loopback up, deleted on exit."""
    namespace = Netns(unique_name(prefix))
    run_host(["ip", "netns", "add", namespace.name])
    try:
        namespace.run(["ip", "link", "set", "lo", "up"])
        yield namespace
    finally:
        namespace.delete()


@dataclass(frozen=True)
class VethLink:
    """A veth pair between two namespaces, each end addressed and up."""

    left: Netns
    right: Netns
    left_interface: str
    right_interface: str
    left_address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    right_address: ipaddress.IPv4Interface | ipaddress.IPv6Interface


def add_veth(
    left: Netns,
    right: Netns,
    left_address: str = "10.201.0.1/24",
    right_address: str = "10.201.0.2/24",
    *,
    mtu: int | None = None,
) -> VethLink:
    """Connect two namespaces with a veth pair. Removed with the namespaces (deleting either end deletes both)."""
    suffix = unique_suffix()
    left_interface, right_interface = f"va{suffix}", f"vb{suffix}"
    run_host(
        [
            "ip",
            "link",
            "add",
            left_interface,
            "netns",
            left.name,
            "type",
            "veth",
            "peer",
            "name",
            right_interface,
            "netns",
            right.name,
        ]
    )
    link = VethLink(
        left,
        right,
        left_interface,
        right_interface,
        ipaddress.ip_interface(left_address),
        ipaddress.ip_interface(right_address),
    )
    for namespace, interface, address in (
        (left, left_interface, link.left_address),
        (right, right_interface, link.right_address),
    ):
        # nodad: IPv6 duplicate address detection would delay the address by a second or more.
        extra = ["nodad"] if address.version == 6 else []
        namespace.run(["ip", "addr", "add", str(address), "dev", interface, *extra])
        if mtu is not None:
            namespace.run(["ip", "link", "set", interface, "mtu", str(mtu)])
        namespace.run(["ip", "link", "set", interface, "up"])
    return link


@contextlib.contextmanager
def two_namespaces(
    left_address: str = "10.201.0.1/24", right_address: str = "10.201.0.2/24"
) -> Iterator[tuple[Netns, Netns, VethLink]]:
    """Two fresh namespaces joined by one veth pair."""
    with netns("dmncl") as left, netns("dmncr") as right:
        yield left, right, add_veth(left, right, left_address, right_address)


def wait_for_ping(namespace: Netns, address: str, *, timeout: float = 10.0) -> bool:
    """Ping every 0.2 s until one reply arrives; True if it did within `timeout` seconds."""
    # iputils: with -w (deadline), -c counts replies, not probes, so this stops at the first reply.
    result = namespace.run(
        ["ping", "-n", "-q", "-c", "1", "-i", "0.2", "-w", str(int(timeout)), address],
        check=False,
        timeout=timeout + 5,
    )
    return result.returncode == 0
