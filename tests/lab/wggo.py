"""A wireguard-go peer (Debian's apt package) inside a test namespace, configured with `wg` (wireguard-tools).

wireguard-go keeps its UAPI socket in /var/run/wireguard/<interface>.sock, which is NOT per-namespace: interface
names are therefore unique per run. Stopping sends SIGTERM (wireguard-go removes its interface and socket), and the
owning `Netns` kills the process by PID anyway if a test fails halfway.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.netns import Netns, run_host, stop_process, unique_name
from tests.lab.wait import wait_until

UAPI_DIRECTORY = Path("/var/run/wireguard")
_START_TIMEOUT_SECONDS = 10.0


def wg_genkey() -> str:
    """A fresh base64 private key from `wg genkey`."""
    return run_host(["wg", "genkey"]).stdout.strip()


def wg_pubkey(private_key: str) -> str:
    result = subprocess.run(["wg", "pubkey"], input=private_key, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@dataclass(frozen=True)
class WgPeer:
    """One [Peer] section for `wg setconf`."""

    public_key: str
    allowed_ips: Sequence[str]
    endpoint: str | None = None
    preshared_key: str | None = None
    persistent_keepalive: int = 0

    def render(self) -> str:
        lines = ["[Peer]", f"PublicKey = {self.public_key}", f"AllowedIPs = {', '.join(self.allowed_ips)}"]
        if self.endpoint is not None:
            lines.append(f"Endpoint = {self.endpoint}")
        if self.preshared_key is not None:
            lines.append(f"PresharedKey = {self.preshared_key}")
        if self.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {self.persistent_keepalive}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PeerStatus:
    """One peer line of `wg show IF dump`."""

    public_key: str
    endpoint: str | None
    latest_handshake: int  # UNIX seconds, 0 = never
    rx_bytes: int
    tx_bytes: int


@dataclass
class WireGuardGo:
    """A wireguard-go interface in `namespace` with an address, MTU and peers; restartable."""

    namespace: Netns
    private_key: str
    address: str  # interface address with prefix, e.g. "10.44.0.2/24"
    listen_port: int
    peers: list[WgPeer] = field(default_factory=list)
    mtu: int = 1420
    extra_addresses: Sequence[str] = ()  # more interface addresses, e.g. an IPv6 one next to `address`
    interface: str = field(default_factory=lambda: unique_name("wgg"))
    process: subprocess.Popen[bytes] | None = None

    @property
    def public_key(self) -> str:
        return wg_pubkey(self.private_key)

    @property
    def socket_path(self) -> Path:
        return UAPI_DIRECTORY / f"{self.interface}.sock"

    def start(self) -> None:
        """Start wireguard-go, wait for its UAPI socket, then configure keys, peers, address, MTU and link up."""
        environment = dict(os.environ)
        # The apt build refuses to run on kernels with WireGuard unless told otherwise; harmless here.
        environment["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD"] = "1"
        self.process = self.namespace.popen(
            ["wireguard-go", "--foreground", self.interface],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not self.socket_path.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"wireguard-go {self.interface} exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"wireguard-go {self.interface}: no UAPI socket after {_START_TIMEOUT_SECONDS}s")
            time.sleep(0.02)
        self.apply_config()
        self.namespace.run(["ip", "addr", "add", self.address, "dev", self.interface])
        for extra in self.extra_addresses:
            # nodad: IPv6 duplicate address detection would hold the address back for a second or more.
            self.namespace.run(["ip", "addr", "add", extra, "dev", self.interface, "nodad"])
        self.namespace.run(["ip", "link", "set", self.interface, "mtu", str(self.mtu), "up"])

    def render_config(self) -> str:
        interface = f"[Interface]\nPrivateKey = {self.private_key}\nListenPort = {self.listen_port}\n"
        return interface + "".join(peer.render() for peer in self.peers)

    def apply_config(self) -> None:
        """(Re)load keys and peers with `wg setconf`: replaces the whole configuration, sessions included."""
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as config:
            config.write(self.render_config())
            config.flush()
            self.namespace.run(["wg", "setconf", self.interface, config.name])

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            if self.process in self.namespace.processes:
                self.namespace.processes.remove(self.process)
            self.process = None
        # A killed wireguard-go leaves its socket behind; a stale one would fool the next start().
        self.socket_path.unlink(missing_ok=True)

    def restart(self, *, private_key: str | None = None) -> None:
        """Stop and start again, optionally with a new private key (a peer that lost its state / was reinstalled)."""
        self.stop()
        if private_key is not None:
            self.private_key = private_key
        self.start()

    def peer_status(self) -> list[PeerStatus]:
        lines = self.namespace.run(["wg", "show", self.interface, "dump"]).stdout.splitlines()
        statuses = []
        for line in lines[1:]:  # line 1 describes the interface itself
            public_key, _psk, endpoint, _allowed, handshake, rx, tx, _keepalive = line.split("\t")
            statuses.append(
                PeerStatus(
                    public_key,
                    None if endpoint == "(none)" else endpoint,
                    int(handshake),
                    int(rx),
                    int(tx),
                )
            )
        return statuses

    def wait_for_handshake(self, timeout: float) -> None:
        """Wait until a handshake with any peer completed (its latest-handshake time is set)."""
        wait_until(
            lambda: any(status.latest_handshake for status in self.peer_status()),
            timeout,
            f"a WireGuard handshake on {self.interface}",
            interval=0.2,
        )


@contextlib.contextmanager
def wireguard_go(
    namespace: Netns,
    *,
    address: str,
    listen_port: int,
    peers: Sequence[WgPeer] = (),
    private_key: str | None = None,
    mtu: int = 1420,
    extra_addresses: Sequence[str] = (),
) -> Iterator[WireGuardGo]:
    """A started wireguard-go peer, stopped on exit."""
    peer = WireGuardGo(
        namespace,
        private_key if private_key is not None else wg_genkey(),
        address,
        listen_port,
        list(peers),
        mtu,
        extra_addresses,
    )
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()
