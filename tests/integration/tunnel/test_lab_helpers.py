"""The lab helpers themselves: namespaces, veth and two wireguard-go peers reaching each other."""

from __future__ import annotations

import pytest

from tests.conftest import require_root, require_tools
from tests.lab.netns import netns, run_host, two_namespaces, wait_for_ping
from tests.lab.wggo import WgPeer, wg_genkey, wg_pubkey, wireguard_go

pytestmark = pytest.mark.lab


def test_namespace_is_deleted_on_exit_even_after_failure() -> None:
    require_root()
    require_tools("ip")
    names = []

    def fail_inside_namespace() -> None:
        with netns() as namespace:
            names.append(namespace.name)
            raise RuntimeError("test body failed")

    with pytest.raises(RuntimeError, match="test body failed"):
        fail_inside_namespace()
    assert names
    assert names[0] not in run_host(["ip", "netns", "list"]).stdout


def test_veth_pair_connects_two_namespaces() -> None:
    require_root()
    require_tools("ip", "ping")
    with two_namespaces() as (left, _right, link):
        assert wait_for_ping(left, str(link.right_address.ip), timeout=5)


def test_two_wireguard_go_peers_ping_and_survive_restart_with_new_key() -> None:
    require_root()
    require_tools("ip", "ping", "wg", "wireguard-go")
    left_key, right_key = wg_genkey(), wg_genkey()
    with (
        two_namespaces() as (left, right, link),
        wireguard_go(
            left,
            address="10.44.0.1/24",
            listen_port=51820,
            private_key=left_key,
            peers=[WgPeer(wg_pubkey(right_key), ["10.44.0.2/32"], f"{link.right_address.ip}:51821")],
        ) as left_peer,
        wireguard_go(
            right,
            address="10.44.0.2/24",
            listen_port=51821,
            private_key=right_key,
            peers=[WgPeer(wg_pubkey(left_key), ["10.44.0.1/32"])],
        ) as right_peer,
    ):
        assert wait_for_ping(left, "10.44.0.2", timeout=5)
        assert right_peer.peer_status()[0].latest_handshake > 0

        new_right_key = wg_genkey()
        right_peer.restart(private_key=new_right_key)
        left_peer.peers = [WgPeer(wg_pubkey(new_right_key), ["10.44.0.2/32"], f"{link.right_address.ip}:51821")]
        left_peer.apply_config()
        assert wait_for_ping(left, "10.44.0.2", timeout=5)
