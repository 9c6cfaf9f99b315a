"""dmnc (`dmnc wg up`, a real subprocess) against Linux kernel WireGuard in a qemu guest (the production VM side).

The guest initiates, as the Docker VM does: it knows the host's endpoint, dmnc does not know the guest's.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from tests.conftest import require_root, require_tools
from tests.integration.tunnel.peers import DmncPeer, DmncWg, dmnc_wg, render_dmnc_config
from tests.lab.netns import Netns, netns, wait_for_ping
from tests.lab.qemu_guest import QemuGuest, qemu_guest, require_guest_image
from tests.lab.wait import wait_until
from tests.lab.wggo import wg_genkey, wg_pubkey

pytestmark = pytest.mark.lab

HOST_TUNNEL_ADDRESS = "10.33.33.1"
GUEST_TUNNEL_ADDRESS = "10.33.33.2"
HOST_PORT = 51820
KEEPALIVE_SECONDS = 1
TRANSFER_BYTES = 4 * 1024 * 1024  # TCG emulation carries ~40 Mbit/s: about a second
TRANSFER_PORT = 5201
# /proc/net/tcp and tcp6 (proc(5)): the local address ends in the port in hex, state 0A is TCP_LISTEN.
LISTENING_PATTERN = f":{TRANSFER_PORT:04X} [0-9A-F:]+ 0A "
# How long a command the guest has started may take to reach a state (listening, a keepalive): emulated CPU, loaded
# host.
GUEST_SETTLE_TIMEOUT_S = 30.0


def configure_guest_wireguard(guest: QemuGuest, private_key: str, host_public_key: str) -> None:
    guest.put_file("/run/wg0.key", private_key.encode() + b"\n", mode=0o600)
    guest.check(
        "ip link add wg0 type wireguard\n"
        f"wg set wg0 private-key /run/wg0.key peer {host_public_key}"
        f" endpoint {guest.host_addresses[0].ip}:{HOST_PORT}"
        f" allowed-ips {HOST_TUNNEL_ADDRESS}/32 persistent-keepalive {KEEPALIVE_SECONDS}\n"
        f"ip addr add {GUEST_TUNNEL_ADDRESS}/24 dev wg0\n"
        "ip link set wg0 up\n"
    )


def guest_pings_host(guest: QemuGuest) -> bool:
    # The first probes may leave before the handshake completes (emulated CPU): retry for a while.
    script = f"for i in $(seq 20); do ping -c 1 -W 1 {HOST_TUNNEL_ADDRESS} >/dev/null && exit 0; done; exit 1"
    return guest.run(script, timeout=60).exit_code == 0


def guest_receives_tcp_transfer(namespace: Netns, guest: QemuGuest) -> tuple[str, str]:
    """sha256 of what the host sent and of what the guest received, through the tunnel."""
    guest.check(f"(nc -l -p {TRANSFER_PORT} | sha256sum > /run/received.sum) >/dev/null 2>&1 &")
    wait_until(
        lambda: guest.run(f"grep -sqE '{LISTENING_PATTERN}' /proc/net/tcp /proc/net/tcp6").exit_code == 0,
        GUEST_SETTLE_TIMEOUT_S,
        f"nc listening on TCP port {TRANSFER_PORT} in the guest",
        interval=0.2,
    )
    sender = namespace.run(
        [
            sys.executable,
            "-m",
            "tests.integration.tunnel.tcp_transfer",
            "send",
            GUEST_TUNNEL_ADDRESS,
            str(TRANSFER_PORT),
            str(TRANSFER_BYTES),
        ],
        timeout=120,
    )
    sent_bytes, sent_sum = sender.stdout.split()
    assert int(sent_bytes) == TRANSFER_BYTES
    received = guest.check(
        "for i in $(seq 50); do [ -s /run/received.sum ] && break; sleep 0.2; done; cat /run/received.sum"
    )
    return sent_sum, received.split()[0]


@pytest.fixture
def guest_prerequisites() -> None:
    require_root()
    require_tools("ip", "ping", "qemu-system-x86_64", "wg")
    require_guest_image()


@pytest.mark.slow
def test_kernel_wireguard_guest_initiates_carries_traffic_keeps_alive_and_recovers_after_reboot(
    guest_prerequisites: None,
) -> None:
    guest_key, host_key = wg_genkey(), wg_genkey()
    config = render_dmnc_config(
        host_key,
        f"{HOST_TUNNEL_ADDRESS}/24",
        HOST_PORT,
        [DmncPeer(wg_pubkey(guest_key), [f"{GUEST_TUNNEL_ADDRESS}/32"])],  # no endpoint: the guest calls in
    )
    with netns("dmnck") as namespace, qemu_guest(namespace) as guest, dmnc_wg(namespace, config) as dmnc:
        configure_guest_wireguard(guest, guest_key, wg_pubkey(host_key))
        assert guest_pings_host(guest)
        assert wait_for_ping(namespace, GUEST_TUNNEL_ADDRESS, timeout=10)
        peer = current_peer(dmnc, guest_key)
        assert peer["handshakes"] == 1
        assert peer["endpoint"][0] == str(guest.guest_addresses[0].ip)

        sent_sum, received_sum = guest_receives_tcp_transfer(namespace, guest)
        assert received_sum == sent_sum

        # Persistent keepalive: with no traffic at all, the guest's empty packets keep arriving every second.
        # Three of them within four intervals (and a half for jitter), counted by dmnc.
        before = current_peer(dmnc, guest_key)["rx_packets"]
        wait_until(
            lambda: current_peer(dmnc, guest_key)["rx_packets"] - before >= 3,
            4 * KEEPALIVE_SECONDS + 0.5,
            "3 persistent keepalives from the guest",
            interval=0.2,
        )

        previous_boot = guest.boot_id
        guest.reboot()
        assert guest.boot_id != previous_boot
        configure_guest_wireguard(guest, guest_key, wg_pubkey(host_key))
        assert guest_pings_host(guest)
        assert wait_for_ping(namespace, GUEST_TUNNEL_ADDRESS, timeout=10)
        assert current_peer(dmnc, guest_key)["handshakes"] == 2


def current_peer(dmnc: DmncWg, guest_key: str) -> dict[str, Any]:
    return dmnc.peer_status(wg_pubkey(guest_key))
