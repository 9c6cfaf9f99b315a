"""Linux route manager and reconciler against the real kernel, inside a namespace this test creates.

Each test starts `scenarios.py` inside the namespace (the pytest process never changes namespace) and asserts on
the facts it reports. The namespace holds a veth pair: one end plays the tunnel, the other "another program's"
interface (a LAN or a VPN).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_lab, require_root, require_tools
from tests.lab.dockerd import import_busybox_image, running_dockerd
from tests.lab.netns import Netns, add_veth, netns, unique_suffix

pytestmark = [pytest.mark.lab, pytest.mark.skipif(sys.platform != "linux", reason="Linux rtnetlink and namespaces")]

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def veth_namespace() -> Iterator[tuple[Netns, str, str]]:
    require_root()
    require_tools("ip")
    require_lab(Path("/dev/net/tun").exists(), "/dev/net/tun")
    with netns("dmncrt") as namespace:
        suffix = unique_suffix()
        tunnel, other = f"rt{suffix}", f"ro{suffix}"
        namespace.run(["ip", "link", "add", tunnel, "type", "veth", "peer", "name", other])
        namespace.run(["ip", "link", "set", tunnel, "up"])
        namespace.run(["ip", "link", "set", other, "up"])
        yield namespace, tunnel, other


def run_scenario(veth_namespace: tuple[Netns, str, str], scenario: str) -> dict[str, Any]:
    namespace, tunnel, other = veth_namespace
    argv = namespace.command([sys.executable, "-m", "tests.integration.routes.scenarios", scenario, tunnel, other])
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    facts: dict[str, Any] = json.loads(result.stdout)
    return facts


def test_add_list_delete_ipv4_and_ipv6_routes_through_a_tun_and_they_die_with_it(
    veth_namespace: tuple[Netns, str, str],
) -> None:
    facts = run_scenario(veth_namespace, "crud")
    tun = f"{veth_namespace[1][:11]}tun"
    assert facts["after_add"] == [
        f"172.30.1.0/24 dev {tun} scope link",
        f"172.30.2.0/24 dev {tun} scope link",
        f"fd00:30:1::/64 dev {tun} metric 1024 pref medium",
        f"fd00:30:2::/64 dev {tun} metric 1024 pref medium",
    ]
    assert facts["listed_ours"] == ["172.30.1.0/24", "172.30.2.0/24", "fd00:30:1::/64", "fd00:30:2::/64"]
    assert facts["duplicate_add"] == "a route to 172.30.1.0/24 exists already"
    assert facts["delete_foreign"] is False
    assert facts["foreign_still_there"] == [f"172.30.9.0/24 dev {veth_namespace[2]} scope link"]
    assert facts["deleted"] == [True, True, True, True]
    assert facts["deleted_again"] is False
    assert facts["after_delete"] == []
    assert (facts["many_added"], facts["many_deleted"], facts["after_many"]) == ([150, 150], 150, [])
    assert facts["many_results"] == ["None"]
    assert facts["partial_batch"] == [
        ["172.30.3.0/24", True, None],
        ["172.30.9.0/24", False, "a route to 172.30.9.0/24 exists already"],
        ["fd00:30:3::/64", True, None],
    ]
    assert facts["after_partial_batch"] == [
        f"172.30.3.0/24 dev {tun} scope link",
        f"fd00:30:3::/64 dev {tun} metric 1024 pref medium",
    ]
    assert facts["foreign_after_batch"] == [f"172.30.9.0/24 dev {veth_namespace[2]} scope link"]
    assert facts["partial_delete"] == [
        ["172.30.3.0/24", True, None],
        ["172.30.9.0/24", False, None],
        ["fd00:30:3::/64", True, None],
    ]
    assert facts["after_tun_closed"] == []
    assert facts["gone_interface"] == f"no network interface named {tun!r}"


def test_host_addresses_and_connected_subnets_leave_out_the_tunnel_and_changes_are_noticed(
    veth_namespace: tuple[Netns, str, str],
) -> None:
    facts = run_scenario(veth_namespace, "host_addresses")
    other = veth_namespace[2]
    assert not [entry for entry in facts["before"] if "tun" in entry]  # the tunnel's 10.33.33.1 peer 10.33.33.2
    # Each veth end also has its IPv6 link-local address (fe80::/64), which the kernel adds by itself.
    assert [entry for entry in facts["before"] if " fe80:" not in entry] == sorted(
        ["lo 127.0.0.1/32", "lo 127.0.0.0/8", "lo ::1/128", f"{other} 192.168.77.5/32", f"{other} 192.168.77.0/24"]
    )
    assert facts["noticed_seconds"] < 1.0
    assert set(facts["after"]) - set(facts["before"]) == {f"{other} 172.20.10.2/32", f"{other} 172.20.10.0/28"}


def test_a_policy_rule_that_shadows_a_route_is_reported_with_rule_and_table_and_cleared_when_it_goes(
    veth_namespace: tuple[Netns, str, str],
) -> None:
    facts = run_scenario(veth_namespace, "shadow")
    other = veth_namespace[2]
    assert facts["before"] == [["routed", True]]
    assert facts["noticed_seconds"] < 1.0  # the rule notification triggers a pass: no waiting for a resync
    [[decision, installed, reason]] = facts["shadowed"]
    assert (decision, installed) == ("shadowed", False)
    assert reason.startswith(f"shadowed by rule 5270 -> table 52 (0.0.0.0/0 dev {other}); ")
    assert "ip rule add to 172.24.1.0/24 lookup main" in reason
    assert facts["after"] == [["routed", True]]


def test_reconciler_routes_a_burst_of_fifty_networks_removes_them_and_withdraws_all(
    veth_namespace: tuple[Netns, str, str],
) -> None:
    facts = run_scenario(veth_namespace, "burst")
    tunnel = veth_namespace[1]

    def routes_of(index: int) -> set[str]:
        return {
            f"172.31.{index}.0/24 dev {tunnel} scope link",
            f"{ipaddress.ip_network(f'fd00:31:{index:x}::/64')} dev {tunnel} metric 1024 pref medium",
        }

    assert set(facts["routes"]) == set().union(*(routes_of(index) for index in range(50)))
    assert set(facts["after_removal"]) == set().union(*(routes_of(index) for index in range(25, 50)))
    assert facts["after_withdraw"] == []
    print(f"50 networks (100 routes) routed in {facts['seconds'] * 1000:.1f} ms")


def test_route_deleted_or_replaced_by_another_process_is_restored_within_a_second(
    veth_namespace: tuple[Netns, str, str],
) -> None:
    facts = run_scenario(veth_namespace, "restore")  # the scenario fails if a restore takes longer than a second
    tunnel, other = veth_namespace[1], veth_namespace[2]
    assert facts["routes"] == [
        f"172.29.1.0/24 dev {tunnel} proto 220 scope link",
        f"172.29.2.0/24 dev {tunnel} proto 220 scope link",
    ]
    assert (
        f"WARNING route 172.29.1.0/24 dev {tunnel} was deleted by pid {facts['deleter_pid']}; putting it back"
        in facts["log"]
    )
    replaced = (
        f"WARNING pid {facts['replacer_pid']} added another route to 172.29.2.0/24, which dmnc routes: "
        f"172.29.2.0/24 dev {other}"
    )
    restored = f"INFO restored route 172.29.2.0/24 dev {tunnel}"
    assert replaced in facts["log"]
    assert facts["log"].index(restored) > facts["log"].index(replaced)
    print(
        f"restored after ip route del in {facts['delete_restored_seconds'] * 1000:.1f} ms, "
        f"after ip route replace in {facts['replace_restored_seconds'] * 1000:.1f} ms"
    )


def test_route_replaced_or_narrowed_by_another_process_is_yielded_and_back_when_it_goes(
    veth_namespace: tuple[Netns, str, str],
) -> None:
    facts = run_scenario(veth_namespace, "yield")
    tunnel, other = veth_namespace[1], veth_namespace[2]
    assert facts["while_taken"] == [f"172.25.1.0/24 dev {other} scope link", f"172.25.2.128/25 dev {other} scope link"]
    assert facts["reasons"] == [
        f"yielded to a route of another program: taken by 172.25.1.0/24 via {other}; "
        "keep it with --route-over 172.25.1.0/24",
        f"yielded to a route of another program: taken by 172.25.2.128/25 via {other}; "
        "keep it with --route-over 172.25.2.0/24",
    ]
    assert facts["after_vpn_left"] == [
        f"172.25.1.0/24 dev {tunnel} proto 220 scope link",
        f"172.25.2.0/24 dev {tunnel} proto 220 scope link",
    ]


def test_routes_flushed_by_an_interface_flap_are_back_within_a_second_of_link_up(
    veth_namespace: tuple[Netns, str, str],
) -> None:
    facts = run_scenario(veth_namespace, "link_flap")  # the scenario fails if the restore takes longer than a second
    tunnel = veth_namespace[1]
    assert facts["while_down"] == []
    assert sorted(facts["after_up"]) == [
        f"172.26.1.0/24 dev {tunnel} scope link",
        f"fd00:26:1::/64 dev {tunnel} metric 1024 pref medium",
    ]
    print(f"routes back {facts['restored_seconds'] * 1000:.1f} ms after link up")


def test_overlapping_route_to_another_interface_is_reported_and_not_touched(
    veth_namespace: tuple[Netns, str, str],
) -> None:
    facts = run_scenario(veth_namespace, "overlap")
    tunnel, other = veth_namespace[1], veth_namespace[2]
    assert facts["findings"] == 1
    assert f"172.28.0.0/16 dev {other} scope link" in facts["after"]
    assert not [line for line in facts["after"] if line.startswith("172.28.5.")]
    assert set(facts["after"]) - set(facts["before"]) == {f"172.27.0.0/24 dev {tunnel} proto 220 scope link"}
    [warning] = [line for line in facts["log"] if line.startswith("WARNING")]
    assert "network 'net1' subnet 172.28.5.0/24" in warning
    assert f"the route 172.28.0.0/16 dev {other}" in warning


def test_routes_move_to_a_gateway_per_family_and_back_and_stay_dmncs_by_protocol_alone(
    veth_namespace: tuple[Netns, str, str],
) -> None:
    facts = run_scenario(veth_namespace, "gateway")
    _, tunnel, other = veth_namespace
    tunnel6 = f"fd00:31:1::/64 dev {tunnel} metric 1024 pref medium"
    assert facts["tunnel"] == [f"172.31.1.0/24 dev {tunnel} scope link", tunnel6]
    assert facts["direct"] == [f"172.31.1.0/24 via 10.77.0.2 dev {other}", tunnel6]
    assert facts["listed_ours"] == [f"172.31.1.0/24 via 10.77.0.2 dev {other}", f"fd00:31:1::/64 dev {tunnel}"]
    assert facts["delete_foreign"] is False
    assert facts["foreign"] == facts["foreign_after_withdraw"] == [f"172.31.9.0/24 via 10.77.0.2 dev {other}"]
    assert facts["direct6"][1] == f"fd00:31:1::/64 via fd77::2 dev {other} metric 1024 pref medium"
    assert facts["back"] == facts["tunnel"]
    assert facts["after_withdraw"] == []
    assert [line for line in facts["log"] if line.startswith("INFO moved")] == [
        f"INFO moved route 172.31.1.0/24 via 10.77.0.2 dev {other}",
        f"INFO moved route fd00:31:1::/64 via fd77::2 dev {other}",
        f"INFO moved route 172.31.1.0/24 dev {tunnel}",
        f"INFO moved route fd00:31:1::/64 dev {tunnel}",
        f"INFO moved route 172.31.1.0/24 via 10.77.0.2 dev {other}",
    ]


@pytest.mark.slow
def test_docker_networks_created_in_a_burst_are_routed_reachable_resynced_and_removed() -> None:
    require_root()
    require_tools("ip", "dockerd", "iptables", "ping")
    require_lab(Path("/bin/busybox").exists(), "/bin/busybox (busybox-static)")
    with running_dockerd() as engine, netns("dmncrh") as host:
        image = import_busybox_image(engine.socket_path)
        vm = Netns(engine.netns)
        link = add_veth(host, vm, "10.203.0.1/24", "10.203.0.2/24")
        # The VM end answers ARP for the container subnets behind it (a real tunnel is point-to-point).
        vm.run(["sysctl", "-q", f"net.ipv4.conf.{link.right_interface}.proxy_arp=1"])
        vm.run(["sysctl", "-q", "net.ipv4.ip_forward=1"])
        # What the VM-side setup does for chip0: let tunnel traffic through Docker's FORWARD filtering.
        for direction in ("-i", "-o"):
            vm.run(["iptables", "-I", "DOCKER-USER", direction, link.right_interface, "-j", "ACCEPT"])
        argv = host.command(
            [
                sys.executable,
                "-m",
                "tests.integration.routes.docker_scenario",
                link.left_interface,
                str(engine.socket_path),
                image,
            ]
        )
        result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        facts = json.loads(result.stdout)
    assert facts["before"] == ["172.17.0.0/16"]  # dockerd's default bridge network
    assert facts["reachable"] == [True, True]
    assert facts["kept_while_away"] is True
    print(
        f"50 networks (v4+v6) created in {facts['created_seconds']:.2f} s, all 100 routes in "
        f"{facts['burst_routed_seconds']:.2f} s; resync after reconnect {facts['resync_seconds'] * 1000:.0f} ms; "
        f"removal of 41 networks routed out in {facts['removal_seconds']:.2f} s"
    )
