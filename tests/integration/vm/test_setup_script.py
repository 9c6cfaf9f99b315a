"""The VM-side setup script itself, run as root in script_lab network namespaces (no Docker involved).

"VM" namespace: the script. "host" namespace: a wireguard-go peer standing in for dmnc. The two are joined by a veth
pair; the host's veth address is what the VM resolves as its endpoint.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from dmnc.vm import (
    IptablesBackend,
    KernelWireGuardMissing,
    ScriptMode,
    SetupParams,
    SetupResult,
    SetupScriptError,
    TeardownDone,
    VmMode,
    outcome_from_output_untrusted,
    script_command,
)
from dmnc.vm.result import DirectLink
from tests.conftest import require_root, require_tools
from tests.integration.vm.scriptlab import (
    LAB_NONCE,
    fake_getent,
    rule_lines,
    run_script,
    start_userspace,
    stop_userspace,
)
from tests.lab.netns import Netns, add_veth, netns, unique_name, wait_for_ping
from tests.lab.wait import wait_until
from tests.lab.wggo import WgPeer, WireGuardGo, wireguard_go

pytestmark = pytest.mark.lab

HOST_PORT = 51820
HANDSHAKE_TIMEOUT_SECONDS = 15.0


@dataclass
class ScriptLab:
    vm: Netns
    host: Netns
    host_peer: WireGuardGo
    host_underlay: str
    params: SetupParams
    vm_underlay_interface: str = ""


@pytest.fixture
def script_lab() -> Iterator[ScriptLab]:
    require_root()
    require_tools("ip", "wg", "wireguard-go", "iptables-legacy", "iptables-nft", "ip6tables-nft", "dash")
    with netns("dmvm") as vm, netns("dmho") as host:
        link = add_veth(host, vm, "10.201.0.1/24", "10.201.0.2/24")
        with wireguard_go(host, address="10.33.33.1/32", listen_port=HOST_PORT) as host_peer:
            params = SetupParams(
                base64.b64decode(host_peer.public_key),
                HOST_PORT,
                endpoint=str(link.left_address.ip),
                interface=unique_name("dv"),
            )
            yield ScriptLab(vm, host, host_peer, str(link.left_address.ip), params, link.right_interface)


def connect_host_peer(script_lab: ScriptLab, result: SetupResult) -> None:
    """What dmnc does with a result: accept the VM's key; the VM's endpoint is learnt from its handshake."""
    script_lab.host_peer.peers = [
        WgPeer(base64.b64encode(result.vm_public_key).decode(), ["10.33.33.2/32", "fd33:33:33::2/128"])
    ]
    script_lab.host_peer.apply_config()
    script_lab.host.run(["ip", "route", "replace", "10.33.33.2/32", "dev", script_lab.host_peer.interface])


def test_setup_mode_reports_missing_kernel_wireguard_and_changes_nothing(script_lab: ScriptLab) -> None:
    completed = run_script(script_lab.vm, script_lab.params, ScriptMode.SETUP)
    assert completed.returncode == 0, completed.stderr
    outcome = outcome_from_output_untrusted(completed.stdout, completed.returncode, nonce=LAB_NONCE)
    assert outcome == KernelWireGuardMissing(os.uname().release)
    assert "Unknown device type" in completed.stderr
    assert script_lab.vm.run(["ip", "link", "show", script_lab.params.interface], check=False).returncode != 0
    for save in ("iptables-nft-save", "iptables-legacy-save"):
        assert rule_lines(script_lab.vm, save) == []


def test_userspace_entry_brings_up_a_tunnel_that_completes_a_handshake(script_lab: ScriptLab, tmp_path: Path) -> None:
    process, outcome, output = start_userspace(script_lab.vm, script_lab.params, tmp_path)
    assert isinstance(outcome, SetupResult), output
    assert outcome.mode is VmMode.USERSPACE
    assert outcome.endpoint == (script_lab.host_underlay, HOST_PORT)
    assert outcome.kernel_release == os.uname().release
    assert outcome.ipv6
    connect_host_peer(script_lab, outcome)
    script_lab.host_peer.wait_for_handshake(HANDSHAKE_TIMEOUT_SECONDS)
    assert wait_for_ping(script_lab.host, "10.33.33.2")
    # The tunnel is a one-way door: the VM's own namespace starts nothing towards the host (OUTPUT -o chip0).
    assert script_lab.vm.run(["ping", "-c", "1", "-W", "1", "10.33.33.1"], check=False).returncode != 0

    interface = script_lab.params.interface
    dump = script_lab.vm.run(["wg", "show", interface, "dump"]).stdout.splitlines()
    peer_fields = dump[1].split("\t")
    assert peer_fields[0] == script_lab.params.host_public_key_base64
    assert peer_fields[2] == f"{script_lab.host_underlay}:{HOST_PORT}"
    # Allowed IPs are the host's tunnel addresses only, never a default route.
    assert sorted(peer_fields[3].split(",")) == ["10.33.33.1/32", "fd33:33:33::1/128"]
    assert peer_fields[7] == "25"
    addresses = script_lab.vm.run(["ip", "-o", "addr", "show", "dev", interface]).stdout
    assert "inet 10.33.33.2 peer 10.33.33.1/32" in addresses
    assert "inet6 fd33:33:33::2 peer fd33:33:33::1/128" in addresses
    assert "mtu 1420" in script_lab.vm.run(["ip", "link", "show", interface]).stdout

    # The private key stays in a 0600 file inside the "container"; only the public key was printed.
    key_file = tmp_path / "private.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    private_key = key_file.read_text().strip()
    assert private_key not in output
    assert base64.b64encode(outcome.vm_public_key).decode() in output
    stop_userspace(script_lab.vm, process)


def test_a_vm_with_ipv6_disabled_gets_an_ipv4_only_tunnel(script_lab: ScriptLab, tmp_path: Path) -> None:
    for scope in ("all", "default"):
        script_lab.vm.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{scope}.disable_ipv6=1"])
    process, outcome, output = start_userspace(script_lab.vm, script_lab.params, tmp_path)
    assert isinstance(outcome, SetupResult), output
    assert outcome.ipv6 is False
    assert "IPv6 is disabled in the VM" in output
    allowed_ips = (
        script_lab.vm.run(["wg", "show", script_lab.params.interface, "allowed-ips"]).stdout.split("\t")[1].split()
    )
    assert allowed_ips == ["10.33.33.1/32"]
    assert rule_lines(script_lab.vm, "ip6tables-nft-save") == []
    assert len(rule_lines(script_lab.vm, "iptables-nft-save")) == len(EXPECTED_V4_RULES)
    connect_host_peer(script_lab, outcome)
    script_lab.host_peer.wait_for_handshake(HANDSHAKE_TIMEOUT_SECONDS)
    assert wait_for_ping(script_lab.host, "10.33.33.2")
    stop_userspace(script_lab.vm, process)


def test_userspace_entry_keeps_its_key_across_restarts(script_lab: ScriptLab, tmp_path: Path) -> None:
    first, outcome_one, _ = start_userspace(script_lab.vm, script_lab.params, tmp_path)
    stop_userspace(script_lab.vm, first)
    second, outcome_two, _ = start_userspace(script_lab.vm, script_lab.params, tmp_path)
    assert isinstance(outcome_one, SetupResult)
    assert isinstance(outcome_two, SetupResult)
    assert outcome_one.vm_public_key == outcome_two.vm_public_key
    stop_userspace(script_lab.vm, second)


# Towards the host (-o) only replies pass: DMNC-TO-HOST accepts conntrack ESTABLISHED,RELATED and drops the rest.
TO_HOST_RULES = {
    "-A DOCKER-USER -o {interface} -j DMNC-TO-HOST",
    "-A OUTPUT -o {interface} -j DMNC-TO-HOST",
    "-A DMNC-TO-HOST -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A DMNC-TO-HOST -j DROP",
}
EXPECTED_V4_RULES = {
    "-A PREROUTING -i {interface} -j ACCEPT",
    "-A DOCKER-USER -i {interface} -j ACCEPT",
    "-A POSTROUTING -s 10.33.33.1/32 -j MASQUERADE",
    *TO_HOST_RULES,
}
EXPECTED_V6_RULES = {
    "-A PREROUTING -i {interface} -j ACCEPT",
    "-A DOCKER-USER -i {interface} -j ACCEPT",
    "-A POSTROUTING -s fd33:33:33::1/128 -j MASQUERADE",
    *TO_HOST_RULES,
}


@pytest.mark.parametrize("backend", [IptablesBackend.LEGACY, IptablesBackend.NFT])
def test_rules_are_added_once_however_often_setup_runs_and_teardown_removes_all(
    script_lab: ScriptLab, tmp_path: Path, backend: IptablesBackend
) -> None:
    params = replace(script_lab.params, iptables=backend)
    other = "nft" if backend is IptablesBackend.LEGACY else "legacy"
    for _run in range(2):
        process, outcome, output = start_userspace(script_lab.vm, params, tmp_path)
        assert isinstance(outcome, SetupResult), output
        stop_userspace(script_lab.vm, process)
    interface = params.interface
    v4 = rule_lines(script_lab.vm, f"iptables-{backend.value}-save")
    v6 = rule_lines(script_lab.vm, f"ip6tables-{backend.value}-save")
    assert sorted(v4) == sorted(rule.format(interface=interface) for rule in EXPECTED_V4_RULES)
    assert sorted(v6) == sorted(rule.format(interface=interface) for rule in EXPECTED_V6_RULES)
    assert rule_lines(script_lab.vm, f"iptables-{other}-save") == []

    completed = run_script(script_lab.vm, params, ScriptMode.TEARDOWN)
    assert completed.returncode == 0, completed.stderr
    assert outcome_from_output_untrusted(completed.stdout, 0, nonce=LAB_NONCE) == TeardownDone(os.uname().release)
    for save in ("iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save", "ip6tables-legacy-save"):
        assert rule_lines(script_lab.vm, save) == [], save
    # The DOCKER-USER chain the script created (no Docker here) is gone too.
    assert "DOCKER-USER" not in script_lab.vm.run([f"iptables-{backend.value}-save"]).stdout
    # Teardown again: nothing left to do, still succeeds.
    assert run_script(script_lab.vm, params, ScriptMode.TEARDOWN).returncode == 0


def test_rules_go_first_and_a_docker_owned_chain_survives_teardown(script_lab: ScriptLab, tmp_path: Path) -> None:
    # Docker's chains live in legacy here: auto must follow them and insert ahead of Docker's own rules.
    for command in (
        ["iptables-legacy", "-N", "DOCKER"],
        ["iptables-legacy", "-N", "DOCKER-USER"],
        ["iptables-legacy", "-A", "DOCKER-USER", "-j", "RETURN"],
        ["iptables-legacy", "-A", "FORWARD", "-j", "DOCKER-USER"],
        ["iptables-legacy", "-t", "raw", "-A", "PREROUTING", "-d", "172.18.0.2", "!", "-i", "br-x", "-j", "DROP"],
    ):
        script_lab.vm.run(command)
    params = replace(script_lab.params, host_address6=None, vm_address6=None)
    process, outcome, output = start_userspace(script_lab.vm, params, tmp_path)
    assert isinstance(outcome, SetupResult), output
    stop_userspace(script_lab.vm, process)
    interface = params.interface
    legacy = rule_lines(script_lab.vm, "iptables-legacy-save")
    assert legacy.index(f"-A PREROUTING -i {interface} -j ACCEPT") < legacy.index(
        "-A PREROUTING -d 172.18.0.2/32 ! -i br-x -j DROP"
    )
    assert legacy.index(f"-A DOCKER-USER -i {interface} -j ACCEPT") < legacy.index("-A DOCKER-USER -j RETURN")
    assert rule_lines(script_lab.vm, "iptables-nft-save") == []

    assert run_script(script_lab.vm, params, ScriptMode.TEARDOWN).returncode == 0
    assert sorted(rule_lines(script_lab.vm, "iptables-legacy-save")) == sorted(
        [
            "-A FORWARD -j DOCKER-USER",
            "-A DOCKER-USER -j RETURN",
            "-A PREROUTING -d 172.18.0.2/32 ! -i br-x -j DROP",
        ]
    )


def test_endpoint_is_the_first_candidate_that_resolves(script_lab: ScriptLab, tmp_path: Path) -> None:
    tools_dir = tmp_path / "bin"
    tools_dir.mkdir()
    tools = fake_getent(tools_dir, {"host.lima.internal": script_lab.host_underlay})
    params = replace(script_lab.params, endpoint=None)
    process, outcome, output = start_userspace(script_lab.vm, params, tmp_path, path_prefix=tools)
    assert isinstance(outcome, SetupResult), output
    assert outcome.endpoint_name == "host.lima.internal"
    assert outcome.endpoint == (script_lab.host_underlay, HOST_PORT)
    connect_host_peer(script_lab, outcome)
    script_lab.host_peer.wait_for_handshake(HANDSHAKE_TIMEOUT_SECONDS)
    stop_userspace(script_lab.vm, process)


def test_unresolvable_endpoints_fail_with_one_clear_line(script_lab: ScriptLab, tmp_path: Path) -> None:
    tools_dir = tmp_path / "bin"
    tools_dir.mkdir()
    tools = fake_getent(tools_dir, {})
    params = replace(script_lab.params, endpoint=None)
    completed = run_script(script_lab.vm, params, ScriptMode.SETUP, path_prefix=tools)
    assert completed.returncode == 1
    assert completed.stderr.count("\n") == 1
    with pytest.raises(SetupScriptError, match="none of the endpoint candidates resolves"):
        outcome_from_output_untrusted(completed.stdout + completed.stderr, completed.returncode, nonce=LAB_NONCE)
    explicit = replace(script_lab.params, endpoint="no-such-host.invalid")
    completed = run_script(script_lab.vm, explicit, ScriptMode.SETUP, path_prefix=tools)
    assert completed.returncode == 1
    assert "does not resolve inside the VM" in completed.stderr


def test_a_failure_after_wireguard_go_started_stops_it_and_says_why(script_lab: ScriptLab, tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    broken = tools / "iptables-legacy"
    broken.write_text("#!/bin/sh\necho 'iptables v1.8.9 (legacy): cannot open table: Permission denied' >&2\nexit 4\n")
    broken.chmod(0o755)
    params = replace(script_lab.params, iptables=IptablesBackend.LEGACY)
    state = ["--state-dir", str(tmp_path)]
    completed = run_script(script_lab.vm, params, ScriptMode.USERSPACE, extra=state, path_prefix=tools)
    assert completed.returncode == 1
    error_lines = [line for line in completed.stderr.splitlines() if line.startswith("dmnc-setup: error: ")]
    assert len(error_lines) == 1
    assert "iptables-legacy -t filter -N DOCKER-USER failed (exit 4)" in error_lines[0]
    assert "Permission denied" in error_lines[0]
    # The script returned, so wireguard-go is gone and took its interface with it.
    wait_until(
        lambda: script_lab.vm.run(["ip", "link", "show", params.interface], check=False).returncode != 0,
        5,
        "wireguard-go to go with the failed script (its interface gone)",
        interval=0.1,
    )


def test_missing_net_admin_is_reported_not_mistaken_for_missing_wireguard(script_lab: ScriptLab) -> None:
    require_tools("setpriv")
    completed = script_lab.vm.run(
        [
            "setpriv",
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
            "--",
            *script_command(script_lab.params, ScriptMode.SETUP, nonce=LAB_NONCE),
        ],
        check=False,
    )
    assert completed.returncode == 1
    assert "NET_ADMIN" in completed.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "missing mode"),
        (["bogus"], "unknown mode"),
        (["setup", "--port"], "needs a value"),
        (["setup", "--frobnicate", "1"], "unknown option"),
        (["setup", "--nonce", LAB_NONCE, "--host-public-key", "x;reboot", "--port", "1"], "host-public-key"),
        (["setup", "--nonce", LAB_NONCE, "--host-public-key", "A" * 43 + "=", "--port", "65536"], "--port"),
        (["setup", "--nonce", LAB_NONCE, "--host-public-key", "A" * 43 + "=", "--port", "1", "--mtu", "99"], "--mtu"),
        (
            ["setup", "--nonce", LAB_NONCE, "--host-public-key", "A" * 43 + "=", "--port", "1", "--interface", "-x"],
            "interface",
        ),
        (
            ["setup", "--nonce", LAB_NONCE, "--host-public-key", "A" * 43 + "=", "--port", "1", "--direct-host", "-x"],
            "--direct-host",
        ),
        (["teardown", "--nonce", LAB_NONCE, "--host-address", "$(reboot)"], "--host-address"),
        (["teardown", "--host-address", "10.33.33.1"], "--nonce"),
        (["check", "--nonce", "$(reboot)"], "--nonce"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(arguments: list[str], message: str) -> None:
    require_tools("dash")
    script = Path(__file__).parents[3] / "dmnc" / "vm" / "setup.sh"
    completed = subprocess.run(
        ["dash", str(script), *arguments], capture_output=True, text=True, check=False, timeout=10
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith("dmnc-setup: error: ")
    assert completed.stderr.count("\n") == 1
    assert message in completed.stderr


def test_a_link_shared_with_a_direct_host_address_gets_the_tunnels_rules_is_reported_and_torn_down(
    script_lab: ScriptLab, tmp_path: Path
) -> None:
    vm_interface = script_lab.vm_underlay_interface
    script_lab.vm.run(["ip", "addr", "add", "fd01::2/64", "dev", vm_interface, "nodad"])
    hosts = (ipaddress.ip_address("10.201.0.1"), ipaddress.ip_address("fd01::1"), ipaddress.ip_address("192.0.2.7"))
    params = replace(script_lab.params, direct_hosts=hosts)
    links = []
    for _run in range(2):  # a second setup rewrites the chains: one copy of each rule
        process, outcome, output = start_userspace(script_lab.vm, params, tmp_path)
        assert isinstance(outcome, SetupResult), output
        links.append(outcome.direct_links)
        stop_userspace(script_lab.vm, process)
    # 192.0.2.7 is reached through no connected route (no route at all here): not a shared link.
    assert (
        links[0]
        == links[1]
        == (
            DirectLink(vm_interface, ipaddress.ip_address("10.201.0.2"), hosts[0]),
            DirectLink(vm_interface, ipaddress.ip_address("fd01::2"), hosts[1]),
        )
    )
    v4 = rule_lines(script_lab.vm, "iptables-nft-save")
    direct_v4 = [line for line in v4 if "DMNC-DIRECT" in line]
    assert sorted(direct_v4) == sorted(
        [
            "-A PREROUTING -j DMNC-DIRECT",
            f"-A DMNC-DIRECT -s 10.201.0.1/32 -i {vm_interface} -j ACCEPT",
            "-A DOCKER-USER -j DMNC-DIRECT",
            f"-A DMNC-DIRECT -s 10.201.0.1/32 -i {vm_interface} -j ACCEPT",
            f"-A DMNC-DIRECT -d 10.201.0.1/32 -o {vm_interface} -j DMNC-TO-HOST",
            "-A POSTROUTING -j DMNC-DIRECT",
            "-A DMNC-DIRECT -s 10.201.0.1/32 -j MASQUERADE",
        ]
    )
    v6 = rule_lines(script_lab.vm, "ip6tables-nft-save")
    assert f"-A DMNC-DIRECT -d fd01::1/128 -o {vm_interface} -j DMNC-TO-HOST" in v6
    completed = run_script(script_lab.vm, params, ScriptMode.TEARDOWN)
    assert completed.returncode == 0, completed.stderr
    for save in ("iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save", "ip6tables-legacy-save"):
        assert rule_lines(script_lab.vm, save) == [], save
        assert "DMNC-DIRECT" not in script_lab.vm.run([save]).stdout
