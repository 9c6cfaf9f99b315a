"""The VM side's health verdicts on a fake clock: the pure core of the VM keeper, driven like the WireGuard timers."""

from __future__ import annotations

import logging

from dmnc.config import DEFAULT_VM_STALE_AFTER_S
from dmnc.supervisor.vm_keeper import (
    FIRST_HANDSHAKE_GRACE_S,
    SHORTEST_SENSIBLE_STALE_AFTER_S,
    VM_KEEPALIVE_S,
    HealthEvent,
    Verdict,
    VmHealth,
    stale_after_warning,
)
from dmnc.wireguard import PeerStats

STALE_AFTER = DEFAULT_VM_STALE_AFTER_S


def set_up_at(now: float) -> tuple[VmHealth, PeerStats]:
    health, peer = VmHealth(), PeerStats()
    health.peer_added(peer)
    health.set_up(now)
    return health, peer


def kinds(events: tuple[HealthEvent, ...]) -> list[str | None]:
    return [event.kind for event in events]


def test_nothing_is_judged_before_the_first_setup() -> None:
    health, peer = VmHealth(), PeerStats()
    health.peer_added(peer)
    check = health.check(1e9, peer, STALE_AFTER)
    assert check.verdict is Verdict.NOT_SET_UP
    assert check.events == ()


def test_no_first_handshake_is_overdue_only_after_the_grace_period() -> None:
    health, peer = set_up_at(100.0)
    assert health.check(100.0 + FIRST_HANDSHAKE_GRACE_S, peer, STALE_AFTER).verdict is Verdict.AWAITING_FIRST_HANDSHAKE
    overdue = health.check(100.0 + FIRST_HANDSHAKE_GRACE_S + 0.5, peer, STALE_AFTER)
    assert overdue.verdict is Verdict.FIRST_HANDSHAKE_OVERDUE
    assert overdue.verdict.needs_setup
    [event] = overdue.events
    assert (event.kind, event.level) == ("vm.stale", logging.WARNING)
    assert event.message == "nothing heard from the VM side for 20 s: setting it up again"
    assert health.silent_since_setup


def test_a_vm_side_that_keeps_talking_stays_healthy_and_silence_makes_it_stale() -> None:
    health, peer = set_up_at(0.0)
    now = 0.0
    for _ in range(20):  # keepalives every 25 s for several minutes
        now += VM_KEEPALIVE_S
        peer.rx_packets += 1
        assert health.check(now, peer, STALE_AFTER).verdict is Verdict.HEALTHY
    assert not health.silent_since_setup
    assert health.check(now + STALE_AFTER, peer, STALE_AFTER).verdict is Verdict.HEALTHY
    stale = health.check(now + STALE_AFTER + 1.0, peer, STALE_AFTER)
    assert stale.verdict is Verdict.STALE
    assert kinds(stale.events) == ["vm.stale"]


def test_stale_is_announced_once_per_setup() -> None:
    health, peer = set_up_at(0.0)
    peer.rx_packets = 1
    health.check(1.0, peer, STALE_AFTER)
    assert kinds(health.check(100.0, peer, STALE_AFTER).events) == ["vm.stale"]
    again = health.check(200.0, peer, STALE_AFTER)
    assert again.verdict is Verdict.STALE
    assert again.events == ()
    health.set_up(300.0)
    assert health.check(300.0, peer, STALE_AFTER).verdict is Verdict.AWAITING_FIRST_HANDSHAKE
    assert kinds(health.check(400.0, peer, STALE_AFTER).events) == ["vm.stale"]


def test_the_stale_limit_is_read_at_each_check() -> None:
    # SIGHUP may change vm_stale_after; the next check applies it.
    health, peer = set_up_at(0.0)
    peer.rx_packets = 1
    health.check(10.0, peer, STALE_AFTER)
    assert health.check(15.0, peer, STALE_AFTER).verdict is Verdict.HEALTHY
    assert health.check(15.0, peer, 4.0).verdict is Verdict.STALE


def test_the_first_handshake_is_announced_with_the_vms_endpoint_later_ones_only_logged() -> None:
    health, peer = set_up_at(0.0)
    peer.handshakes, peer.rx_packets, peer.endpoint = 1, 1, ("192.168.65.3", 41000)
    [event] = health.check(1.0, peer, STALE_AFTER).events
    assert event.kind == "tunnel.up"
    assert event.message == "tunnel up: the VM handshook from 192.168.65.3:41000"
    peer.handshakes, peer.rx_packets = 2, 2
    [later] = health.check(121.0, peer, STALE_AFTER).events
    assert (later.kind, later.level) == (None, logging.DEBUG)
    fresh, fresh_peer = set_up_at(0.0)
    fresh_peer.handshakes = 1
    [unknown] = fresh.check(1.0, fresh_peer, STALE_AFTER).events
    assert unknown.message == "tunnel up: the VM handshook from an unknown endpoint"


def test_a_new_peer_counts_from_its_own_counters() -> None:
    health, peer = set_up_at(0.0)
    peer.handshakes = 1
    health.check(1.0, peer, STALE_AFTER)
    replacement = PeerStats()
    health.peer_added(replacement)
    health.set_up(2.0)
    replacement.handshakes = 1
    assert kinds(health.check(3.0, replacement, STALE_AFTER).events) == ["tunnel.up"]


def test_stale_limits_below_keepalive_plus_rekey_timeout_are_warned_about() -> None:
    assert SHORTEST_SENSIBLE_STALE_AFTER_S == 30.0  # 25 s keepalive (dmnc/vm/setup.sh) + REKEY_TIMEOUT 5 s
    assert stale_after_warning(DEFAULT_VM_STALE_AFTER_S) is None
    assert stale_after_warning(30.0) is None
    warning = stale_after_warning(4.0)
    assert warning is not None
    assert warning.startswith("vm_stale_after is 4 s, below the VM's keepalive interval plus REKEY_TIMEOUT (30 s)")
