"""The VM side's macvlan shims (setup.sh, "Shims"), run directly in lab namespaces.

The lab of test_ipv6_vm_side, plus a macvlan network as Docker makes one: a parent link in the VM (one end of a
veth pair, both ends up) and a "container" namespace holding a macvlan child of it in bridge mode. Without a shim
the VM cannot reach that child; with one it can, the child cannot open anything towards the VM, and teardown (and
a setup without the shim) leaves no shim link behind.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmnc.vm import ScriptMode, SetupResult
from dmnc.vm.shims import SHIM_LINK_PREFIX, Shim, ShimKind
from tests.integration.vm.scriptlab import rule_lines, run_script, start_userspace, stop_userspace
from tests.integration.vm.test_ipv6_vm_side import Lab, open_lab, start_vm_side, stop_vm_side
from tests.lab.netns import Netns, netns, unique_suffix

pytestmark = pytest.mark.lab

MACVLAN_SUBNET = ipaddress.IPv4Network("192.168.77.0/24")
IP_RANGE = ipaddress.IPv4Network("192.168.77.192/27")
CHILD_ADDRESS = "192.168.77.200"
SHIM_ADDRESS = ipaddress.IPv4Address("192.168.77.223")
PING_TIMEOUT_SECONDS = 2


@dataclasses.dataclass
class MacvlanLab:
    lab: Lab
    child: Netns
    parent: str
    tmp_path: Path


@pytest.fixture
def macvlan_lab(tmp_path: Path) -> Iterator[MacvlanLab]:
    with open_lab(tmp_path) as lab, netns("dmmv") as child:
        suffix = unique_suffix()
        parent, peer, child_link = f"mp{suffix}", f"mq{suffix}", f"mc{suffix}"
        lab.vm.run(["ip", "link", "add", parent, "type", "veth", "peer", "name", peer])
        lab.vm.run(["ip", "link", "set", peer, "up"])
        lab.vm.run(["ip", "link", "set", parent, "up"])
        lab.vm.run(["ip", "link", "add", child_link, "link", parent, "type", "macvlan", "mode", "bridge"])
        lab.vm.run(["ip", "link", "set", child_link, "netns", child.name])
        child.run(["ip", "addr", "add", f"{CHILD_ADDRESS}/{MACVLAN_SUBNET.prefixlen}", "dev", child_link])
        child.run(["ip", "link", "set", child_link, "up"])
        yield MacvlanLab(lab, child, parent, tmp_path)


def shim_for(parent: str) -> Shim:
    return Shim("lan", f"{SHIM_LINK_PREFIX}0000000a0", ShimKind.MACVLAN, parent, (SHIM_ADDRESS,), IP_RANGE, False)


def ping(namespace: Netns, address: str) -> bool:
    argv = ["ping", "-c", "1", "-W", str(PING_TIMEOUT_SECONDS), address]
    return namespace.run(argv, check=False, timeout=PING_TIMEOUT_SECONDS + 5).returncode == 0


def shim_links(namespace: Netns) -> list[str]:
    return [
        line for line in namespace.run(["ip", "-o", "link", "show"]).stdout.splitlines() if SHIM_LINK_PREFIX in line
    ]


def test_the_shim_reaches_the_macvlan_child_and_opens_nothing_back(macvlan_lab: MacvlanLab) -> None:
    lab = macvlan_lab.lab
    assert not ping(lab.vm, CHILD_ADDRESS), "the VM reaches its macvlan child without a shim"
    shim = shim_for(macvlan_lab.parent)
    lab.params = dataclasses.replace(lab.params, shims=(shim,))
    start_vm_side(lab)
    try:
        routes = lab.vm.run(["ip", "route", "show", str(IP_RANGE)]).stdout
        assert f"dev {shim.link}" in routes
        assert f"{SHIM_ADDRESS}/32" in lab.vm.run(["ip", "-o", "addr", "show", "dev", shim.link]).stdout
        assert ping(lab.vm, CHILD_ADDRESS)
        # The child may answer, never start: nothing new from the shim into the VM.
        assert not ping(macvlan_lab.child, str(SHIM_ADDRESS))
        assert "-A INPUT -i dmncm+ -j DMNC-FROM-SHIM" in rule_lines(lab.vm, "iptables-nft-save")
    finally:
        stop_vm_side(lab)
    # A setup without the shim removes it: the set of shims is declared, not accumulated.
    lab.params = dataclasses.replace(lab.params, shims=())
    start_vm_side(lab)
    stop_vm_side(lab)
    assert shim_links(lab.vm) == []
    lab.params = dataclasses.replace(lab.params, shims=(shim,))
    start_vm_side(lab)
    stop_vm_side(lab)
    assert shim_links(lab.vm) != []
    completed = run_script(lab.vm, lab.params, ScriptMode.TEARDOWN)
    assert completed.returncode == 0, completed.stderr
    assert shim_links(lab.vm) == []
    assert not any("DMNC" in line for line in rule_lines(lab.vm, "iptables-nft-save"))


def test_a_missing_parent_is_reported_not_fatal(macvlan_lab: MacvlanLab) -> None:
    lab = macvlan_lab.lab
    missing = dataclasses.replace(shim_for("nosuchparent0"), link=f"{SHIM_LINK_PREFIX}0000000b0")
    down = shim_for(macvlan_lab.parent)
    lab.vm.run(["ip", "link", "set", macvlan_lab.parent, "down"])
    lab.params = dataclasses.replace(lab.params, shims=(missing, down))
    result = start_vm_side(lab)  # a SetupResult: the tunnel is up although no shim could be made
    stop_vm_side(lab)
    assert result.shims_failed == (missing.link, down.link)
    assert shim_links(lab.vm) == []


def test_an_ipv6_shim_is_reported_not_made_while_the_vm_does_not_forward_ipv6(macvlan_lab: MacvlanLab) -> None:
    lab = macvlan_lab.lab
    shim6 = Shim(
        "lan",
        f"{SHIM_LINK_PREFIX}0000000c1",
        ShimKind.MACVLAN,
        macvlan_lab.parent,
        (ipaddress.IPv6Address("fd77:77::ff"),),
        ipaddress.IPv6Network("fd77:77::100/120"),
        False,
    )
    lab.params = dataclasses.replace(lab.params, shims=(shim_for(macvlan_lab.parent), shim6))
    # A VM whose Docker has no IPv6 bridge network (this lab's VM has one: it is this test's namespace alone).
    lab.vm.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=0"])
    process, result, output = start_userspace(lab.vm, lab.params, lab.state_dir)
    stop_userspace(lab.vm, process)
    assert isinstance(result, SetupResult), output
    assert result.shims_failed == (shim6.link,)
    assert "IPv6 forwarding is off in the VM" in output
    assert [line.split(":")[1].strip().split("@")[0] for line in shim_links(lab.vm)] == [shim_for("").link]
    # From a shim into the VM, IPv6 neighbour discovery passes (conntrack does not track it), nothing new else.
    rules = rule_lines(lab.vm, "ip6tables-nft-save")
    assert "-A DMNC-FROM-SHIM -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT" in rules, rules
    assert "-A DMNC-FROM-SHIM -j DROP" in rules


def test_malformed_shims_are_refused_by_the_script_too(macvlan_lab: MacvlanLab) -> None:
    lab = macvlan_lab.lab
    for bad in (
        "eth0,macvlan,eth1,192.168.77.192/27,reserved,192.168.77.223",
        "dmncm1,bridge,eth1,192.168.77.192/27,reserved,192.168.77.223",
        "dmncm1,macvlan,-x,192.168.77.192/27,reserved,192.168.77.223",
        "dmncm1,macvlan,eth1,-j,reserved,192.168.77.223",
        "dmncm1,macvlan,eth1,192.168.77.192/27,guess,192.168.77.223",
        "dmncm1,macvlan,eth1,192.168.77.192/27,probe",
    ):
        completed = run_script(lab.vm, lab.params, ScriptMode.SETUP, extra=["--shim", bad])
        assert completed.returncode == 2, (bad, completed.stderr)
        assert f"invalid --shim '{bad}'" in completed.stderr
    assert shim_links(lab.vm) == []


def test_a_probed_shim_takes_the_first_candidate_no_one_answers_for(macvlan_lab: MacvlanLab) -> None:
    lab = macvlan_lab.lab
    free = ipaddress.IPv4Address("192.168.77.222")
    # The child holds the first candidate: its ARP reply to the probe rules it out.
    candidates = (ipaddress.IPv4Address(CHILD_ADDRESS), free)
    shim = dataclasses.replace(shim_for(macvlan_lab.parent), addresses=candidates, probe=True)
    lab.params = dataclasses.replace(lab.params, shims=(shim,))
    # The setup images have busybox's arping (tests/lab/setup_image.py, Alpine's busybox); this host may not.
    tools = macvlan_lab.tmp_path / "tools"
    tools.mkdir()
    (tools / "arping").symlink_to(shutil.which("busybox") or "busybox")
    process, result, output = start_userspace(lab.vm, lab.params, lab.state_dir, path_prefix=tools)
    assert isinstance(result, SetupResult), output
    try:
        assert result.shims_failed == (), output
        addresses = lab.vm.run(["ip", "-o", "addr", "show", "dev", shim.link]).stdout
        assert f"{free}/32" in addresses
        assert CHILD_ADDRESS not in addresses
    finally:
        stop_userspace(lab.vm, process)
