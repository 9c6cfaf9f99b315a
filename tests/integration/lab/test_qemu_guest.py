"""The qemu kernel-WireGuard guest fixture: agent protocol, tools in the guest, and a real kernel WireGuard peer.

One guest boot is shared by the module (a TCG boot costs seconds); the tests that reboot or stop it come last or
boot their own.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import require_root, require_tools
from tests.lab.netns import Netns, netns, run_host, wait_for_ping
from tests.lab.qemu_guest import (
    GuestBootError,
    GuestCommandFailed,
    GuestImage,
    GuestTimeout,
    QemuGuest,
    qemu_guest,
    require_guest_image,
)
from tests.lab.wait import wait_until
from tests.lab.wggo import WgPeer, wg_genkey, wg_pubkey, wireguard_go

pytestmark = pytest.mark.lab

GUEST_UNDERLAY, GUEST_UNDERLAY6 = "192.168.150.2/24", "fd00:150::2/64"
HOST_UNDERLAY, HOST_UNDERLAY6 = "192.168.150.1/24", "fd00:150::1/64"
HOST_GATEWAY = "192.168.150.1"
GUEST_TUNNEL_ADDRESS = "10.150.0.2"
HOST_TUNNEL_ADDRESS = "10.150.0.1"
HOST_LISTEN_PORT = 51820


def _require_guest_lab() -> GuestImage:
    require_root()
    require_tools("ip", "ping", "qemu-system-x86_64", "wg", "wireguard-go")
    return require_guest_image()


@pytest.fixture(scope="module")
def guest_lab() -> Iterator[tuple[Netns, QemuGuest]]:
    image = _require_guest_lab()
    with (
        netns("dmncq") as namespace,
        qemu_guest(
            namespace,
            image=image,
            guest_addresses=(GUEST_UNDERLAY, GUEST_UNDERLAY6),
            host_addresses=(HOST_UNDERLAY, HOST_UNDERLAY6),
            gateways=(HOST_GATEWAY,),
        ) as guest,
    ):
        yield namespace, guest


@pytest.fixture
def guest(guest_lab: tuple[Netns, QemuGuest]) -> QemuGuest:
    return guest_lab[1]


def test_run_returns_exit_code_and_merged_output(guest: QemuGuest) -> None:
    assert guest.run("echo out; echo err >&2; exit 3") == (3, "out\nerr\n")


def test_run_passes_shell_metacharacters_through_unchanged(guest: QemuGuest) -> None:
    script = "printf '%s|' \"$(echo 'a b')\" \"\\$HOME\" '`x`' ';&|<>' \"'\"\n"
    assert guest.check(script) == "a b|$HOME|`x`|;&|<>|'|"


def test_command_killed_at_its_timeout_raises_and_the_channel_stays_usable(guest: QemuGuest) -> None:
    with pytest.raises(GuestTimeout) as raised:
        guest.run("echo started; sleep 30", timeout=1)
    assert raised.value.output.startswith("started\n")  # the guest shell may add its own "Killed" line
    assert guest.check("echo next") == "next\n"


def test_check_raises_with_exit_code_and_output(guest: QemuGuest) -> None:
    with pytest.raises(GuestCommandFailed) as raised:
        guest.check("echo broken; exit 7")
    assert (raised.value.exit_code, raised.value.output) == (7, "broken\n")


def test_background_process_does_not_block_or_leak_into_later_answers(guest: QemuGuest) -> None:
    guest.check("(sleep 1; echo late) & echo started")
    assert guest.run("sleep 2; echo mine") == (0, "mine\n")


def test_put_file_writes_exact_bytes_and_mode(guest: QemuGuest) -> None:
    data = bytes(range(256)) * 40 + b"\n\r\x00 trailing"
    guest.put_file("/tmp/dmnc put test", data, mode=0o600)
    listing = guest.check("sha256sum '/tmp/dmnc put test'; stat -c %a '/tmp/dmnc put test'")
    assert listing.split() == [hashlib.sha256(data).hexdigest(), "/tmp/dmnc", "put", "test", "600"]


def test_put_file_into_missing_directory_fails_clearly(guest: QemuGuest) -> None:
    with pytest.raises(GuestCommandFailed, match="put /nonexistent/dir/file"):
        guest.put_file("/nonexistent/dir/file", b"x")


def test_guest_kernel_creates_a_wireguard_interface(guest: QemuGuest) -> None:
    output = guest.check("ip link add wgprobe type wireguard && ip -d link show wgprobe && ip link del wgprobe")
    assert "wireguard" in output


def test_guest_has_both_iptables_flavours_for_ipv4_and_ipv6(guest: QemuGuest) -> None:
    for tool in ("iptables-legacy", "iptables-nft", "ip6tables-legacy", "ip6tables-nft"):
        source = "fd00:33::1" if tool.startswith("ip6") else "10.33.33.1"
        rule = f"POSTROUTING -s {source} -j MASQUERADE"
        saved = guest.check(f"{tool} -t nat -A {rule} && {tool}-save -t nat && {tool} -t nat -D {rule}")
        assert f"-A POSTROUTING -s {source}/" in saved
    raw = guest.check("iptables -t raw -A PREROUTING -i chip0 -j ACCEPT && iptables-save -t raw")
    guest.check("iptables -t raw -D PREROUTING -i chip0 -j ACCEPT")
    assert "nf_tables" in raw  # plain `iptables` is the nft flavour, as on Debian
    assert "-A PREROUTING -i chip0 -j ACCEPT" in raw


def _configure_guest_wireguard(guest: QemuGuest, private_key: str, host_public_key: str) -> None:
    guest.put_file("/run/wg0.key", private_key.encode() + b"\n", mode=0o600)
    endpoint = f"{guest.host_addresses[0].ip}:{HOST_LISTEN_PORT}"
    guest.check(
        "ip link add wg0 type wireguard\n"
        f"wg set wg0 private-key /run/wg0.key peer {host_public_key} endpoint {endpoint}"
        f" allowed-ips {HOST_TUNNEL_ADDRESS}/32 persistent-keepalive 1\n"
        f"ip addr add {GUEST_TUNNEL_ADDRESS}/24 dev wg0\n"
        "ip link set wg0 up\n"
    )


def _guest_pings_host(guest: QemuGuest) -> bool:
    # The first probes may go out before the handshake completes (emulated CPU): retry for a while.
    script = f"for i in $(seq 20); do ping -c 1 -W 1 {HOST_TUNNEL_ADDRESS} >/dev/null && exit 0; done; exit 1"
    return guest.run(script, timeout=60).exit_code == 0


def _guest_latest_handshake(guest: QemuGuest) -> int:
    _public_key, timestamp = guest.check("wg show wg0 latest-handshakes").split()
    return int(timestamp)


def test_guest_network_comes_from_the_kernel_command_line(guest_lab: tuple[Netns, QemuGuest]) -> None:
    namespace, guest = guest_lab
    assert guest.check("ip route show default").startswith("default via 192.168.150.1 dev eth0")
    assert guest.check("ping -c 1 -W 5 fd00:150::1").count("1 packets received") == 1
    assert wait_for_ping(namespace, "fd00:150::2", timeout=5)


async def test_async_calls_leave_the_trio_loop_running(guest: QemuGuest) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        result = await guest.arun("sleep 1; echo done")
        nursery.cancel_scope.cancel()
    assert result == (0, "done\n")
    assert ticks >= 10  # a blocking call would have frozen the ticker for the whole second


def _tcp_transfer_into_guest(namespace: Netns, guest: QemuGuest) -> None:
    """Send 1 MiB through the tunnel with the host's nc to busybox nc in the guest; the checksums must match."""
    payload = os.urandom(1 << 20)
    guest.check("nc -l -p 5001 > /tmp/received 2>/dev/null &")

    def sent() -> bool:
        completed = subprocess.run(
            namespace.command(["nc", "-N", "-w", "10", GUEST_TUNNEL_ADDRESS, "5001"]),
            input=payload,
            capture_output=True,
            check=False,
        )
        return completed.returncode == 0

    # The listener needs a moment to bind on the emulated CPU.
    wait_until(sent, 30, "nc to send 1 MiB to the guest's listener on port 5001", interval=0.5)
    script = "for i in $(seq 50); do pidof nc >/dev/null || break; sleep 0.2; done; sha256sum /tmp/received"
    assert guest.check(script).split()[0] == hashlib.sha256(payload).hexdigest()


def test_kernel_wireguard_handshakes_with_wireguard_go_and_recovers_after_guest_reboot(
    guest_lab: tuple[Netns, QemuGuest],
) -> None:
    namespace, guest = guest_lab
    guest_key, host_key = wg_genkey(), wg_genkey()
    with wireguard_go(
        namespace,
        address=f"{HOST_TUNNEL_ADDRESS}/24",
        listen_port=HOST_LISTEN_PORT,
        private_key=host_key,
        peers=[WgPeer(wg_pubkey(guest_key), [f"{GUEST_TUNNEL_ADDRESS}/32"])],
    ) as host_peer:
        # The guest initiates, as the VM does in production: only it knows the other side's endpoint.
        _configure_guest_wireguard(guest, guest_key, host_peer.public_key)
        assert _guest_pings_host(guest)
        assert wait_for_ping(namespace, GUEST_TUNNEL_ADDRESS, timeout=10)
        assert _guest_latest_handshake(guest) > 0
        assert host_peer.peer_status()[0].latest_handshake > 0
        _tcp_transfer_into_guest(namespace, guest)

        previous_boot = guest.boot_id
        guest.reboot()
        assert guest.boot_id != previous_boot
        assert guest.run("ip link show wg0").exit_code != 0  # nothing survives a reboot of the initramfs guest

        _configure_guest_wireguard(guest, guest_key, host_peer.public_key)
        assert _guest_pings_host(guest)
        assert wait_for_ping(namespace, GUEST_TUNNEL_ADDRESS, timeout=10)


def test_shutdown_kills_qemu_and_removes_tap_and_files() -> None:
    image = _require_guest_lab()
    with netns("dmncq") as namespace:
        with qemu_guest(namespace, image=image) as guest:
            pid, tap, workdir = guest.pid, guest.tap, guest.workdir
            assert pid is not None
            assert guest.is_running()
            assert guest.check("echo up") == "up\n"
        assert not guest.is_running()
        assert not Path(f"/proc/{pid}").exists()
        assert not workdir.exists()
        assert namespace.run(["ip", "link", "show", tap], check=False).returncode != 0


def test_failed_boot_raises_with_qemu_output_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = _require_guest_lab()
    broken = GuestImage(image.kernel_version, tmp_path / "no-such-kernel", image.initramfs)
    work_parent = tmp_path / "work"
    work_parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work_parent))  # where the guest makes its work directory
    with netns("dmncq") as namespace:
        with pytest.raises(GuestBootError, match="no-such-kernel") as raised:
            QemuGuest.boot(namespace, image=broken, boot_timeout=30)
        assert "qemu exited" in str(raised.value)
        assert "dqtap" not in namespace.run(["ip", "-o", "link", "show"]).stdout
    assert list(work_parent.iterdir()) == []


def test_qemu_runs_inside_the_namespace_where_its_tap_lives(guest_lab: tuple[Netns, QemuGuest]) -> None:
    namespace, guest = guest_lab
    assert str(guest.pid) in run_host(["ip", "netns", "pids", namespace.name]).stdout.split()
    assert wait_for_ping(namespace, str(guest.guest_addresses[0].ip), timeout=5)
    assert subprocess.run(["ip", "link", "show", guest.tap], capture_output=True, check=False).returncode != 0
