"""The setup script's upgrade rule on a real kernel WireGuard `chip0` (the qemu lab guest, Debian's 6.1 kernel).

A `chip0` without dmnc's mark (ifalias `dmnc`) is another tool's and never touched, except one dmnc 0.1 made before
the mark existed: a kernel WireGuard link with exactly one peer, dmnc's host address as its only allowed IP, dmnc's
keepalive, and one of dmnc's iptables rules (0.1 accepted everything out of the tunnel in DOCKER-USER). Such a
chip0 is marked and set up again; docker-mac-net-connect's `chip0` has the same peer shape but none of dmnc's rules,
and stays exactly as it was, also after dmnc ran and was torn down on the same VM.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Iterator

import pytest

from dmnc.vm import (
    ForeignInterface,
    KernelWireGuardPresent,
    ScriptMode,
    SetupParams,
    SetupResult,
    TeardownDone,
    VmMode,
    outcome_from_output_untrusted,
)
from dmnc.vm.result import ScriptOutcome
from tests.integration.vm.scriptlab import LAB_NONCE
from tests.integration.vm.test_setup_script_kernel import (
    HOST_PORT,
    HOST_UNDERLAY,
    SCRIPT_PATH,
    KernelLab,
    guest_lab,  # noqa: F401 # the module-scoped guest fixture with the script installed
    run_in_guest,
)
from tests.lab.qemu_guest import QemuGuest
from tests.lab.wggo import wg_genkey, wg_pubkey

pytestmark = [pytest.mark.lab, pytest.mark.slow]

INTERFACE = "chip0"
# What dmnc 0.1 added for traffic out of the tunnel, before the DMNC-TO-HOST chain (dmnc/vm/setup.sh removes it on
# every run since).
LEGACY_ACCEPT_RULE = f"-A DOCKER-USER -o {INTERFACE} -j ACCEPT"


@pytest.fixture
def lab(guest_lab: KernelLab) -> Iterator[KernelLab]:  # noqa: F811 (the fixture imported above)
    """The module's guest; afterwards no chip0 is left, whoever made it."""
    yield guest_lab
    guest_lab.guest.run(f"ip link del dev {INTERFACE}")


@pytest.fixture
def params() -> SetupParams:
    return SetupParams(base64.b64decode(wg_pubkey(wg_genkey())), HOST_PORT, endpoint=HOST_UNDERLAY)


def run_script(lab: KernelLab, params: SetupParams, mode: ScriptMode) -> tuple[ScriptOutcome, str]:
    exit_code, output = run_in_guest(lab, params, mode)
    return outcome_from_output_untrusted(output, exit_code, nonce=LAB_NONCE), output


def run_check(lab: KernelLab) -> tuple[ScriptOutcome, str]:
    """The script's check mode, as `dmnc doctor` runs it (only --nonce)."""
    exit_code, output = lab.guest.run(shlex.join(["sh", SCRIPT_PATH, ScriptMode.CHECK.value, "--nonce", LAB_NONCE]))
    return outcome_from_output_untrusted(output, exit_code, nonce=LAB_NONCE), output


def make_wireguard_chip0(guest: QemuGuest, host_public_key: str) -> None:
    """A kernel WireGuard chip0 shaped as both dmnc 0.1 and docker-mac-net-connect make it: `.2 peer .1`, one peer
    (the host) allowed 10.33.33.1/32 with a 25 s keepalive."""
    guest.check(
        "set -e; umask 077; wg genkey > /run/chip0.key;"
        f" ip link add dev {INTERFACE} type wireguard;"
        f" wg set {INTERFACE} private-key /run/chip0.key peer {shlex.quote(host_public_key)}"
        f" allowed-ips 10.33.33.1/32 persistent-keepalive 25 endpoint {HOST_UNDERLAY}:{HOST_PORT};"
        f" ip addr add 10.33.33.2 peer 10.33.33.1 dev {INTERFACE}; ip link set {INTERFACE} up; rm /run/chip0.key"
    )


def chip0_state(guest: QemuGuest) -> str:
    """Everything about chip0 a setup could change: link, addresses, alias, WireGuard key, port and peers (not the
    handshake times and byte counters: the chip0 keeps dialling its endpoint meanwhile)."""
    wireguard = "; ".join(
        f"wg show {INTERFACE} {field}"
        for field in (
            "public-key",
            "listen-port",
            "fwmark",
            "peers",
            "allowed-ips",
            "endpoints",
            "persistent-keepalive",
        )
    )
    return guest.check(f"ip -d addr show dev {INTERFACE}; {wireguard}")


def nft_rules(guest: QemuGuest) -> list[str]:
    return [line for line in guest.check("iptables-nft-save").splitlines() if line.startswith("-A ")]


# dmnc 0.1's iptables footprints: the first releases' accept rule, later the chain of what the VM may send the host.
LEGACY_FOOTPRINTS = {
    "accept-rule": "iptables-nft -w -N DOCKER-USER 2>/dev/null; "
    f"iptables-nft -w {LEGACY_ACCEPT_RULE.replace('-A ', '-I ', 1)}",
    "to-host-chain": "iptables-nft -w -N DMNC-TO-HOST",
}


@pytest.mark.parametrize("footprint", sorted(LEGACY_FOOTPRINTS))
def test_a_chip0_as_dmnc_0_1_made_it_is_recognised_marked_and_set_up_again(
    lab: KernelLab, params: SetupParams, footprint: str
) -> None:
    make_wireguard_chip0(lab.guest, params.host_public_key_base64)
    lab.guest.check(LEGACY_FOOTPRINTS[footprint])
    assert "alias" not in lab.guest.check(f"ip link show dev {INTERFACE}")
    outcome, output = run_check(lab)
    assert isinstance(outcome, KernelWireGuardPresent), output  # doctor's check does not call it foreign

    outcome, output = run_script(lab, params, ScriptMode.SETUP)
    assert isinstance(outcome, SetupResult), output
    assert outcome.mode is VmMode.KERNEL
    assert f"{INTERFACE} is dmnc 0.1's (from before the ownership mark): marking it as dmnc's" in output
    assert "alias dmnc" in lab.guest.check(f"ip link show dev {INTERFACE}")
    assert LEGACY_ACCEPT_RULE not in nft_rules(lab.guest)  # 0.1's accept-everything rule is gone
    peers = lab.guest.check(f"wg show {INTERFACE} peers").split()
    assert peers == [params.host_public_key_base64]

    outcome, output = run_script(lab, params, ScriptMode.TEARDOWN)
    assert isinstance(outcome, TeardownDone), output
    assert lab.guest.run(f"ip link show dev {INTERFACE}").exit_code != 0


def test_a_foreign_wireguard_chip0_is_never_touched_even_after_dmnc_ran_on_this_vm(
    lab: KernelLab, params: SetupParams
) -> None:
    # dmnc set up and torn down first: what it leaves behind (an empty DOCKER-USER, say) must not make another
    # tool's chip0 look like dmnc 0.1's.
    outcome, output = run_script(lab, params, ScriptMode.SETUP)
    assert isinstance(outcome, SetupResult), output
    outcome, output = run_script(lab, params, ScriptMode.TEARDOWN)
    assert isinstance(outcome, TeardownDone), output

    make_wireguard_chip0(lab.guest, params.host_public_key_base64)
    before, rules_before = chip0_state(lab.guest), nft_rules(lab.guest)
    for mode in (ScriptMode.CHECK, ScriptMode.SETUP, ScriptMode.TEARDOWN):
        outcome, output = run_check(lab) if mode is ScriptMode.CHECK else run_script(lab, params, mode)
        assert isinstance(outcome, ForeignInterface), output
        assert outcome.interface == INTERFACE
        assert chip0_state(lab.guest) == before
        assert nft_rules(lab.guest) == rules_before
