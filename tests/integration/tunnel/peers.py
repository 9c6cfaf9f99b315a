"""`dmnc wg up` as a real subprocess in a test namespace, and the dmnc <-> wireguard-go topology built on it.

Shared by the interop tests and the benchmark (tests/bench/bench_tunnel.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.lab.netns import Netns, VethLink, stop_process, two_namespaces, unique_name
from tests.lab.wggo import WgPeer, WireGuardGo, wg_genkey, wg_pubkey, wireguard_go

REPOSITORY = Path(__file__).resolve().parents[3]
DMNC_PORT = 51820
WGGO_PORT = 51821
DMNC_ADDRESS = "10.44.0.1"
WGGO_ADDRESS = "10.44.0.2"
# The tunnel is dual-stack, as dmnc's own (an IPv6 ULA pair next to the IPv4 one).
DMNC_ADDRESS6 = "fd00:44::1"
WGGO_ADDRESS6 = "fd00:44::2"
DMNC_INTERFACE_ADDRESSES = f"{DMNC_ADDRESS}/24, {DMNC_ADDRESS6}/64"
DMNC_ALLOWED = [f"{DMNC_ADDRESS}/32", f"{DMNC_ADDRESS6}/128"]
WGGO_ALLOWED = [f"{WGGO_ADDRESS}/32", f"{WGGO_ADDRESS6}/128"]
_LINE_TIMEOUT_SECONDS = 10.0
IPV6_UNDERLAY = ("fd00:201::1/64", "fd00:201::2/64")


def dmnc_command() -> list[str]:
    """How to run dmnc: the frozen binary named by DMNC_EXECUTABLE (CI), else this source tree's package."""
    executable = os.environ.get("DMNC_EXECUTABLE")
    return [executable] if executable else [sys.executable, "-m", "dmnc"]


def endpoint_text(address: object, port: int) -> str:
    """`host:port`, with brackets around an IPv6 host as WireGuard configs want."""
    host = str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class DmncPeer:
    public_key: str
    allowed_ips: Sequence[str]
    endpoint: str | None = None
    persistent_keepalive: int = 0


def render_dmnc_config(private_key: str, address: str, port: int, peers: Sequence[DmncPeer], mtu: int = 1420) -> str:
    lines = ["[Interface]", f"PrivateKey = {private_key}", f"ListenPort = {port}", f"Address = {address}"]
    lines.append(f"MTU = {mtu}")
    for peer in peers:
        lines += ["", "[Peer]", f"PublicKey = {peer.public_key}", f"AllowedIPs = {', '.join(peer.allowed_ips)}"]
        if peer.endpoint is not None:
            lines.append(f"Endpoint = {peer.endpoint}")
        if peer.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}")
    return "\n".join(lines) + "\n"


@dataclass
class DmncWg:
    """`python -m dmnc wg up CONFIG` in `namespace`; `status()` asks it for its counters (SIGUSR1)."""

    namespace: Netns
    config_text: str
    arguments: Sequence[str] = ()  # extra `dmnc wg up` flags
    interface: str = field(default_factory=lambda: unique_name("dm"))
    command: Sequence[str] = field(default_factory=dmnc_command)  # what runs `wg up ...`
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    _config_directory: tempfile.TemporaryDirectory[str] = field(default_factory=tempfile.TemporaryDirectory)

    def start(self) -> None:
        config_path = Path(self._config_directory.name) / "dmnc.conf"
        config_path.write_text(self.config_text)
        self.process = self.namespace.popen(
            [*self.command, "wg", "up", str(config_path), "--interface", self.interface, *self.arguments],
            cwd=REPOSITORY,
            stdout=subprocess.PIPE,
        )
        ready = self._read_line()
        if not ready.startswith("ready "):
            raise RuntimeError(f"dmnc wg up did not get ready: {ready!r}")
        fields = dict(item.split("=", 1) for item in ready.split()[1:])
        self.port = int(fields["port"])

    def _read_line(self) -> str:
        assert self.process is not None
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], _LINE_TIMEOUT_SECONDS)
        if not readable:
            raise RuntimeError("dmnc wg up printed nothing in time")
        return self.process.stdout.readline().decode()

    def reload(self, config_text: str) -> str:
        """Rewrite the config file and send SIGHUP; returns dmnc's `reloaded ...` line."""
        assert self.process is not None
        self.config_text = config_text
        (Path(self._config_directory.name) / "dmnc.conf").write_text(config_text)
        self.process.send_signal(signal.SIGHUP)
        return self._read_line().strip()

    def status(self) -> dict[str, Any]:
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR1)
        status: dict[str, Any] = json.loads(self._read_line())
        return status

    def peer_status(self, public_key: str) -> dict[str, Any]:
        peer: dict[str, Any] = self.status()["peers"][public_key]
        return peer

    def stop(self) -> int | None:
        if self.process is None:
            return None
        stop_process(self.process)
        if self.process in self.namespace.processes:
            self.namespace.processes.remove(self.process)
        code = self.process.returncode
        self.process = None
        return code

    def restart(self, config_text: str | None = None) -> None:
        self.stop()
        if config_text is not None:
            self.config_text = config_text
        self.start()

    def close(self) -> None:
        self.stop()
        self._config_directory.cleanup()


@contextlib.contextmanager
def dmnc_wg(
    namespace: Netns, config_text: str, arguments: Sequence[str] = (), command: Sequence[str] | None = None
) -> Iterator[DmncWg]:
    peer = DmncWg(namespace, config_text, tuple(arguments))
    if command is not None:
        peer.command = tuple(command)
    try:
        peer.start()
        yield peer
    finally:
        peer.close()


@dataclass
class Topology:
    """dmnc in `left`, wireguard-go in `right`, one veth between them; dual-stack tunnel addresses (see above)."""

    left: Netns
    right: Netns
    link: VethLink
    dmnc: DmncWg
    wggo: WireGuardGo
    dmnc_key: str
    wggo_key: str

    @property
    def dmnc_public_key(self) -> str:
        return wg_pubkey(self.dmnc_key)

    @property
    def wggo_public_key(self) -> str:
        return wg_pubkey(self.wggo_key)

    def dmnc_config(self, wggo_public_key: str, *, with_endpoint: bool) -> str:
        endpoint = endpoint_text(self.link.right_address.ip, WGGO_PORT) if with_endpoint else None
        peer = DmncPeer(wggo_public_key, WGGO_ALLOWED, endpoint)
        return render_dmnc_config(self.dmnc_key, DMNC_INTERFACE_ADDRESSES, DMNC_PORT, [peer])


@contextlib.contextmanager
def dmnc_and_wireguard_go(
    *,
    dmnc_knows_endpoint: bool = True,
    wggo_knows_endpoint: bool = True,
    dmnc_arguments: Sequence[str] = (),
    dmnc_runner: Sequence[str] | None = None,
    underlay: tuple[str, str] = ("10.201.0.1/24", "10.201.0.2/24"),
) -> Iterator[Topology]:
    """Both peers up and configured for each other; whoever knows the other's endpoint can start the handshake.

    `underlay` addresses the veth (IPv6 ones make the WireGuard datagrams IPv6). `dmnc_runner` replaces what runs
    `wg up` (default `dmnc_command()`).
    """
    dmnc_key, wggo_key = wg_genkey(), wg_genkey()
    with two_namespaces(*underlay) as (left, right, link):
        wggo_peer = WgPeer(
            wg_pubkey(dmnc_key),
            DMNC_ALLOWED,
            endpoint_text(link.left_address.ip, DMNC_PORT) if wggo_knows_endpoint else None,
        )
        endpoint = endpoint_text(link.right_address.ip, WGGO_PORT) if dmnc_knows_endpoint else None
        config = render_dmnc_config(
            dmnc_key, DMNC_INTERFACE_ADDRESSES, DMNC_PORT, [DmncPeer(wg_pubkey(wggo_key), WGGO_ALLOWED, endpoint)]
        )
        with (
            wireguard_go(
                right,
                address=f"{WGGO_ADDRESS}/24",
                extra_addresses=[f"{WGGO_ADDRESS6}/64"],
                listen_port=WGGO_PORT,
                peers=[wggo_peer],
                private_key=wggo_key,
            ) as wggo,
            dmnc_wg(left, config, dmnc_arguments, dmnc_runner) as dmnc,
        ):
            yield Topology(left, right, link, dmnc, wggo, dmnc_key, wggo_key)
