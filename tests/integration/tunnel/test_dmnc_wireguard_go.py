"""dmnc (`dmnc wg up`, a real subprocess) against wireguard-go (apt), each in its own namespace over a veth."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

import pytest

from tests.bench.filtered_wg_up import FILTERED_WG_UP
from tests.conftest import require_root, require_tools
from tests.integration.tunnel.peers import (
    DMNC_ADDRESS,
    DMNC_ADDRESS6,
    IPV6_UNDERLAY,
    REPOSITORY,
    WGGO_ADDRESS,
    WGGO_ADDRESS6,
    WGGO_PORT,
    Topology,
    dmnc_and_wireguard_go,
    dmnc_command,
    render_dmnc_config,
)
from tests.lab.netns import netns, wait_for_ping
from tests.lab.wggo import wg_genkey, wg_pubkey

pytestmark = pytest.mark.lab

SQUATTER = (
    "import socket, sys, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.bind(('0.0.0.0', int(sys.argv[1]))); print('bound', flush=True); time.sleep(60)"
)
TRANSFER_BYTES = 100 * 1024 * 1024
TRANSFER_PORT = 5201


@pytest.fixture(autouse=True)
def lab_prerequisites() -> None:
    require_root()
    require_tools("ip", "ping", "wg", "wireguard-go")


def ping_count(topology: Topology, from_dmnc: bool, count: int, interval: float = 0.2) -> int:
    """Replies received out of `count` pings."""
    namespace, target = (topology.left, WGGO_ADDRESS) if from_dmnc else (topology.right, DMNC_ADDRESS)
    result = namespace.run(
        ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", target], check=False, timeout=60
    )
    for line in result.stdout.splitlines():
        if "received" in line:
            return int(line.split(",")[1].split()[0])
    raise AssertionError(f"no ping summary in {result.stdout!r}")


def test_dmnc_initiates_the_handshake_and_ping_works_both_ways() -> None:
    with dmnc_and_wireguard_go(wggo_knows_endpoint=False) as topology:
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        assert wait_for_ping(topology.right, DMNC_ADDRESS, timeout=5)
        peer = topology.dmnc.peer_status(topology.wggo_public_key)
        assert peer["handshakes"] == 1
        assert peer["rx_packets"] >= 2
        assert peer["tx_packets"] >= 2
        assert peer["endpoint"] == [str(topology.link.right_address.ip), 51821]
        assert topology.dmnc.stop() == 0  # SIGTERM is an orderly shutdown


def test_wireguard_go_initiates_the_handshake_and_ping_works_both_ways() -> None:
    # dmnc does not know wireguard-go's endpoint: the production direction, where the VM contacts the host.
    with dmnc_and_wireguard_go(dmnc_knows_endpoint=False) as topology:
        assert wait_for_ping(topology.right, DMNC_ADDRESS, timeout=5)
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        peer = topology.dmnc.peer_status(topology.wggo_public_key)
        assert peer["handshakes"] == 1
        assert peer["endpoint"] == [str(topology.link.right_address.ip), 51821]


def test_sigusr1_shows_the_flow_filters_drops_when_wg_up_runs_with_one() -> None:
    with dmnc_and_wireguard_go(dmnc_runner=FILTERED_WG_UP) as topology:
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        # (Other reasons may count the interfaces' own multicast chatter meanwhile.)
        assert topology.dmnc.status()["filter_drops"].get("inbound_not_allowed", 0) == 0
        # The VM's echo requests start no flow of the host's: the door drops each one and counts it.
        assert ping_count(topology, from_dmnc=False, count=3) == 0
        assert topology.dmnc.status()["filter_drops"]["inbound_not_allowed"] == 3
    with dmnc_and_wireguard_go() as topology:
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        assert topology.dmnc.status()["filter_drops"] is None


def test_100_megabyte_tcp_transfer_arrives_intact() -> None:
    with dmnc_and_wireguard_go() as topology:
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        receiver = topology.right.popen(
            [sys.executable, "-m", "tests.integration.tunnel.tcp_transfer", "receive", str(TRANSFER_PORT)],
            cwd=REPOSITORY,
            stdout=subprocess.PIPE,
        )
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == b"listening"
        sender = topology.left.run(
            [
                sys.executable,
                "-m",
                "tests.integration.tunnel.tcp_transfer",
                "send",
                WGGO_ADDRESS,
                str(TRANSFER_PORT),
                str(TRANSFER_BYTES),
            ],
            timeout=120,
        )
        received = receiver.stdout.readline().decode().split()
        assert sender.stdout.split() == [str(TRANSFER_BYTES), received[1]]
        assert received[0] == str(TRANSFER_BYTES)


def test_dmnc_rekeys_after_a_shortened_rekey_after_time_without_losing_pings() -> None:
    rekey_seconds = 2
    with dmnc_and_wireguard_go(
        wggo_knows_endpoint=False, dmnc_arguments=["--rekey-after-time", str(rekey_seconds)]
    ) as topology:
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        first_handshake = topology.wggo.peer_status()[0].latest_handshake
        # 7 s of pings from dmnc's side: dmnc, the initiator, rekeys on send once the session is 2 s old, but
        # never sooner than REKEY_TIMEOUT (5 s) after its previous initiation (whitepaper 6.4): one rekey.
        assert ping_count(topology, from_dmnc=True, count=35) == 35
        peer = topology.dmnc.peer_status(topology.wggo_public_key)
        assert peer["handshakes"] >= 2
        assert topology.wggo.peer_status()[0].latest_handshake > first_handshake


def test_recovery_after_wireguard_go_restarts_with_the_same_key() -> None:
    with dmnc_and_wireguard_go() as topology:
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        topology.wggo.restart()
        # wireguard-go forgot the session; it knows dmnc's endpoint and handshakes as soon as it has a packet.
        assert wait_for_ping(topology.right, DMNC_ADDRESS, timeout=5)
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        assert topology.dmnc.peer_status(topology.wggo_public_key)["handshakes"] == 2


@pytest.mark.slow
def test_recovery_driven_by_dmnc_when_restarted_wireguard_go_does_not_know_its_endpoint() -> None:
    with dmnc_and_wireguard_go(wggo_knows_endpoint=False) as topology:
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        topology.wggo.restart()
        # dmnc keeps sending on its old session, which wireguard-go no longer knows. With no reply for
        # KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (15 s, whitepaper 6.5) dmnc starts a new handshake by itself.
        started = time.monotonic()
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=25)
        assert time.monotonic() - started < 20
        assert topology.dmnc.peer_status(topology.wggo_public_key)["handshakes"] == 2


def test_recovery_after_wireguard_go_restarts_with_a_new_key() -> None:
    # A new key is a new peer identity: dmnc learns it from its edited config file on SIGHUP (like `wg syncconf`),
    # without dropping its interface. wireguard-go needs nothing new: dmnc's key is unchanged.
    with dmnc_and_wireguard_go() as topology:
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        old_public_key = topology.wggo_public_key
        new_key = wg_genkey()
        topology.wggo.restart(private_key=new_key)
        # Until dmnc knows the new key, wireguard-go's initiations are refused (unknown static key).
        assert not wait_for_ping(topology.right, DMNC_ADDRESS, timeout=2)
        assert "UNKNOWN_PEER" in topology.dmnc.status()["device_drops"]
        reloaded = topology.dmnc.reload(topology.dmnc_config(wg_pubkey(new_key), with_endpoint=True))
        assert reloaded == f"reloaded removed peer {old_public_key}; added peer {wg_pubkey(new_key)}"
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        assert wait_for_ping(topology.right, DMNC_ADDRESS, timeout=5)
        assert topology.dmnc.peer_status(wg_pubkey(new_key))["handshakes"] >= 1


def test_dmnc_follows_wireguard_go_to_a_new_port_and_retires_the_old_connected_socket() -> None:
    with dmnc_and_wireguard_go() as topology:
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        old_endpoint = [str(topology.link.right_address.ip), WGGO_PORT]
        assert topology.dmnc.peer_status(topology.wggo_public_key)["endpoint"] == old_endpoint
        # wireguard-go comes back on another port (a NAT rebinding looks the same) and calls dmnc from there.
        topology.wggo.stop()
        topology.wggo.listen_port = WGGO_PORT + 1
        topology.wggo.start()
        assert wait_for_ping(topology.right, DMNC_ADDRESS, timeout=5)
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        peer = topology.dmnc.peer_status(topology.wggo_public_key)
        assert peer["endpoint"] == [str(topology.link.right_address.ip), WGGO_PORT + 1]
        # Only the socket connected to the new endpoint is left (dmnc's sockets on its port, by remote address).
        sockets = topology.left.run(["ss", "-H", "-u", "-a", "-n", "sport", "= :51820"]).stdout
        remotes = sorted(line.split()[-1] for line in sockets.splitlines())
        assert remotes == sorted(["0.0.0.0:*", f"{topology.link.right_address.ip}:{WGGO_PORT + 1}", "[::]:*"])


@pytest.mark.parametrize("dmnc_initiates", [True, False])
def test_ipv6_underlay_and_ipv6_inside_the_tunnel_both_ways(dmnc_initiates: bool) -> None:
    with dmnc_and_wireguard_go(
        underlay=IPV6_UNDERLAY, dmnc_knows_endpoint=dmnc_initiates, wggo_knows_endpoint=not dmnc_initiates
    ) as topology:
        first, second = (topology.left, topology.right) if dmnc_initiates else (topology.right, topology.left)
        assert wait_for_ping(first, WGGO_ADDRESS6 if dmnc_initiates else DMNC_ADDRESS6, timeout=5)
        assert wait_for_ping(second, DMNC_ADDRESS6 if dmnc_initiates else WGGO_ADDRESS6, timeout=5)
        assert wait_for_ping(topology.left, WGGO_ADDRESS, timeout=5)
        peer = topology.dmnc.peer_status(topology.wggo_public_key)
        assert peer["endpoint"] == [str(topology.link.right_address.ip), WGGO_PORT]
        assert peer["handshakes"] == 1


def test_wg_up_on_a_busy_port_fails_with_one_line_and_no_traceback() -> None:
    with netns() as namespace:
        # A plain bind, without SO_REUSEPORT (netcat sets it, and would share the port with dmnc instead).
        squatter = namespace.popen(
            [sys.executable, "-c", SQUATTER, "51820"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert squatter.stdout is not None
        assert squatter.stdout.readline().strip() == b"bound"
        config = render_dmnc_config(wg_genkey(), "10.44.0.1/24", 51820, [])
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as config_file:
            config_file.write(config)
            config_file.flush()
            result = namespace.run([*dmnc_command(), "wg", "up", config_file.name], check=False, timeout=30)
        squatter.kill()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["dmnc wg up: binding UDP 0.0.0.0 port 51820: Address already in use"]
