"""The timer state machine on its own, with shortened timings as tests and tools may configure them."""

from __future__ import annotations

from dmnc.wireguard import Timing
from dmnc.wireguard.timers import PeerTimers, TimerEvent


def no_jitter() -> float:
    return 0.0


def test_attempt_budget_is_rekey_attempt_time_over_rekey_timeout() -> None:
    timers = PeerTimers(Timing(rekey_attempt_time=12.0, rekey_timeout=5.0), no_jitter, 0)
    timers.handshake_initiated(0.0)  # attempt 1
    assert timers.due(5.0) == [TimerEvent.RETRANSMIT_HANDSHAKE]  # attempt 2
    timers.handshake_initiated(5.0)
    assert timers.due(10.0) == [TimerEvent.RETRANSMIT_HANDSHAKE]  # attempt 3 = ceil(12 / 5)
    timers.handshake_initiated(10.0)
    assert timers.due(15.0) == [TimerEvent.HANDSHAKE_GAVE_UP]
    assert timers.next_deadline() == 15.0 + 3 * 180.0  # erase keys later, as after any lost session


def test_completed_handshake_disarms_retransmits_and_restores_the_budget() -> None:
    timers = PeerTimers(Timing(), no_jitter, 0)
    timers.handshake_initiated(0.0)
    assert timers.due(5.0) == [TimerEvent.RETRANSMIT_HANDSHAKE]
    timers.handshake_complete()
    assert timers.handshake_attempts == 0
    assert timers.next_deadline() is None


def test_nothing_fires_before_its_deadline_and_each_fires_once() -> None:
    timers = PeerTimers(Timing(keepalive_timeout=2.0, rekey_timeout=1.0), no_jitter, 7)
    timers.packet_received(0.0, True)  # arms the passive keepalive (2 s) and the persistent one (7 s)
    timers.packet_sent(0.5, True)  # disarms the passive keepalive, arms the new-handshake timer (3 s)
    assert timers.due(3.49) == []
    assert timers.due(3.5) == [TimerEvent.NEW_HANDSHAKE]
    assert timers.due(7.49) == []
    assert timers.due(7.5) == [TimerEvent.PERSISTENT_KEEPALIVE]
    assert timers.due(100.0) == []
