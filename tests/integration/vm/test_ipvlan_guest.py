"""ipvlan shims made by the VM-side setup script on a kernel with ipvlan: Debian's 6.1 kernel in the qemu lab guest
(this lab host's kernel has no ipvlan module).

The guest plays the Docker VM: a veth end is the ipvlan parent, a network namespace in the guest holds an ipvlan
child as Docker's container would, in L2 or L3 mode. The VM's own namespace cannot reach that child through the
parent; a setup run with a shim of the network's mode can, and a teardown leaves no shim behind.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dmnc.vm import ScriptMode, SetupParams, SetupResult, outcome_from_output_untrusted, script_arguments
from dmnc.vm.assets import setup_script
from dmnc.vm.shims import SHIM_LINK_PREFIX, Shim, ShimKind
from tests.conftest import require_root, require_tools
from tests.integration.vm.scriptlab import LAB_NONCE
from tests.lab.netns import netns
from tests.lab.qemu_guest import QemuGuest, qemu_guest, require_guest_image

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HOST_UNDERLAY = "192.168.202.1"
SCRIPT_PATH = "/run/dmnc-setup.sh"
PARENT, PARENT_PEER, CHILD_NETNS, CHILD_LINK = "ipp0", "ipp1", "ipchild", "ipc0"
SUBNET = ipaddress.IPv4Network("192.168.88.0/24")
IP_RANGE = ipaddress.IPv4Network("192.168.88.192/27")
CHILD_ADDRESS = "192.168.88.200"
SHIM_ADDRESS = ipaddress.IPv4Address("192.168.88.223")
HOST_KEY = bytes(range(32))


@dataclass
class GuestLab:
    guest: QemuGuest


@pytest.fixture(scope="module")
def guest_lab() -> Iterator[GuestLab]:
    require_root()
    require_tools("ip", "qemu-system-x86_64")
    image = require_guest_image()
    with netns("dmiv") as host, qemu_guest(host, image=image, host_addresses=(f"{HOST_UNDERLAY}/24",)) as guest:
        guest.put_file(SCRIPT_PATH, setup_script().encode(), mode=0o755)
        yield GuestLab(guest)


@pytest.fixture(params=["l2", "l3"])
def ipvlan_child(guest_lab: GuestLab, request: pytest.FixtureRequest) -> Iterator[str]:
    """An ipvlan child of PARENT in the given mode, in a namespace of its own, as Docker makes one; removed after."""
    mode = str(request.param)
    guest = guest_lab.guest
    guest.check(
        f"ip link add {PARENT} type veth peer name {PARENT_PEER} && ip link set {PARENT} up"
        f" && ip link set {PARENT_PEER} up && ip netns add {CHILD_NETNS}"
        f" && ip link add {CHILD_LINK} link {PARENT} type ipvlan mode {mode}"
        f" && ip link set {CHILD_LINK} netns {CHILD_NETNS}"
        f" && ip -n {CHILD_NETNS} addr add {CHILD_ADDRESS}/{SUBNET.prefixlen} dev {CHILD_LINK}"
        f" && ip -n {CHILD_NETNS} link set {CHILD_LINK} up"
        f" && ip -n {CHILD_NETNS} route add default dev {CHILD_LINK}"
    )
    try:
        yield mode
    finally:
        guest.run(f"ip netns del {CHILD_NETNS}; ip link del {PARENT}")


def run_in_guest(lab: GuestLab, params: SetupParams, mode: ScriptMode) -> tuple[int, str]:
    # The guest agent runs a shell command line; every argument is quoted (and was validated by SetupParams).
    command = shlex.join(["sh", SCRIPT_PATH, *script_arguments(params, mode, nonce=LAB_NONCE)])
    return lab.guest.run(command, timeout=60)


def reaches_child(lab: GuestLab) -> bool:
    return lab.guest.run(f"ping -c 1 -W 2 {CHILD_ADDRESS}", timeout=30)[0] == 0


def test_a_shim_of_the_networks_ipvlan_mode_reaches_its_child_and_teardown_removes_it(
    guest_lab: GuestLab, ipvlan_child: str
) -> None:
    lab = guest_lab
    # Through the parent, as a plain route would go, the VM does not reach its own ipvlan child.
    lab.guest.check(f"ip route add {IP_RANGE} dev {PARENT}")
    assert not reaches_child(lab)
    lab.guest.check(f"ip route del {IP_RANGE} dev {PARENT}")
    kind = ShimKind.IPVLAN if ipvlan_child == "l2" else ShimKind.IPVLAN_L3
    shim = Shim("lan", f"{SHIM_LINK_PREFIX}00000ab0", kind, PARENT, (SHIM_ADDRESS,), IP_RANGE, probe=False)
    params = SetupParams(HOST_KEY, 51820, endpoint=HOST_UNDERLAY, shims=(shim,))
    exit_code, output = run_in_guest(lab, params, ScriptMode.SETUP)
    result = outcome_from_output_untrusted(output, exit_code, nonce=LAB_NONCE)
    assert isinstance(result, SetupResult), output
    assert result.shims_failed == ()
    assert f"ipvlan  mode {ipvlan_child} " in lab.guest.check(f"ip -d link show {shim.link}")
    # The container's link kept its mode: the shim did not switch the parent's ipvlan port.
    assert f"ipvlan  mode {ipvlan_child} " in lab.guest.check(f"ip -n {CHILD_NETNS} -d link show {CHILD_LINK}")
    assert reaches_child(lab)
    exit_code, output = run_in_guest(lab, params, ScriptMode.TEARDOWN)
    assert exit_code == 0, output
    assert SHIM_LINK_PREFIX not in lab.guest.check("ip -o link show")
