"""The five timers of one peer as a pure state machine (whitepaper 6; wireguard-go device/timers.go).

Rule: every decision about when a timer is armed, re-armed, cancelled or given up lives in this file. Timers are
absolute deadlines on the caller's monotonic clock; hooks are named after the event that calls them, and `due(now)`
returns the events whose deadline has passed. The peer turns events into messages.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

from dmnc.wireguard import constants
from dmnc.wireguard.config import Timing


class TimerEvent(enum.Enum):
    RETRANSMIT_HANDSHAKE = enum.auto()  # resend the initiation: no response within REKEY_TIMEOUT
    HANDSHAKE_GAVE_UP = enum.auto()  # REKEY_ATTEMPT_TIME of retransmits without a response: stop, drop the queue
    SEND_KEEPALIVE = enum.auto()  # we received data but sent nothing back for KEEPALIVE_TIMEOUT
    NEW_HANDSHAKE = enum.auto()  # we sent data but heard nothing for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
    ZERO_KEY_MATERIAL = enum.auto()  # no new session for 3 x REJECT_AFTER_TIME: erase all keys
    PERSISTENT_KEEPALIVE = enum.auto()  # nothing authenticated crossed the tunnel for the configured interval


class PeerTimers:
    """Deadlines of one peer's timers (None = not armed) and the counters that decide between events."""

    __slots__ = (
        "_jitter",
        "_max_handshake_attempts",
        "_timing",
        "handshake_attempts",
        "initiation_allowed_at",
        "new_handshake",
        "persistent_keepalive",
        "persistent_keepalive_interval",
        "retransmit_handshake",
        "send_keepalive",
        "sent_last_minute_handshake",
        "zero_key_material",
    )

    def __init__(self, timing: Timing, jitter: Callable[[], float], persistent_keepalive_interval: int) -> None:
        """`jitter()` returns a fresh random delay in [0, REKEY_TIMEOUT_JITTER_MAX_MS) ms, in seconds."""
        self._timing = timing
        self._jitter = jitter
        # Whitepaper 6.4: retransmits continue for REKEY_ATTEMPT_TIME, i.e. this many initiations in total (18 with
        # the defaults; wireguard-go's counter lets two more out, giving up after about 100 s instead of 90 s).
        self._max_handshake_attempts = max(1, math.ceil(timing.rekey_attempt_time / timing.rekey_timeout))
        self.persistent_keepalive_interval = persistent_keepalive_interval
        self.retransmit_handshake: float | None = None
        self.send_keepalive: float | None = None
        self.new_handshake: float | None = None
        self.zero_key_material: float | None = None
        self.persistent_keepalive: float | None = None
        self.handshake_attempts = 0
        self.initiation_allowed_at = float("-inf")
        self.sent_last_minute_handshake = False

    # Hooks. Each "Should be called after ..." names the event, as in wireguard-go.

    def packet_sent(self, now: float, carries_data: bool) -> None:
        """Should be called after any authenticated packet (handshake, keepalive, data) is sent.

        wireguard-go's timersAnyAuthenticatedPacketTraversal + timersAnyAuthenticatedPacketSent, and timersDataSent
        when `carries_data` (a data packet that is not a keepalive), in one call for the data path.
        """
        if self.persistent_keepalive_interval > 0:
            self.persistent_keepalive = now + self.persistent_keepalive_interval
        self.send_keepalive = None  # whatever we sent already tells the peer we are alive
        if carries_data and self.new_handshake is None:
            # Expect an answer within KEEPALIVE_TIMEOUT + REKEY_TIMEOUT, else assume the session is dead.
            self.new_handshake = now + self._timing.keepalive_timeout + self._timing.rekey_timeout + self._jitter()

    def packet_received(self, now: float, carries_data: bool) -> None:
        """Should be called after any authenticated packet (handshake, keepalive, data) is received.

        wireguard-go's timersAnyAuthenticatedPacketTraversal + timersAnyAuthenticatedPacketReceived, and
        timersDataReceived when `carries_data`.
        """
        if self.persistent_keepalive_interval > 0:
            self.persistent_keepalive = now + self.persistent_keepalive_interval
        self.new_handshake = None  # the peer is alive
        if carries_data and self.send_keepalive is None:
            # Answer within KEEPALIVE_TIMEOUT, with a keepalive if we have nothing else to send. (wireguard-go also
            # notes "need another keepalive" when this is armed already, but the keepalive it then sends disarms the
            # re-armed timer again, so the note changes nothing.)
            self.send_keepalive = now + self._timing.keepalive_timeout

    def may_initiate(self, now: float) -> bool:
        """Whether a handshake initiation may be sent now: at most one per REKEY_TIMEOUT (whitepaper 6.4)."""
        return now >= self.initiation_allowed_at

    def handshake_initiated(self, now: float) -> None:
        """Should be called after a handshake initiation is sent (or could not be sent for want of an endpoint).

        The next initiation, retransmit or traffic-triggered alike, waits REKEY_TIMEOUT plus one random jitter.
        wireguard-go jitters only the retransmit timer and lets traffic trigger an initiation after bare
        REKEY_TIMEOUT, so after simultaneous initiations two sides with steady traffic re-initiate in lock-step and
        collide again each time (found by tests/unit/wireguard/test_device_chaos.py); the shared jitter breaks that.
        """
        self.initiation_allowed_at = now + self._timing.rekey_timeout + self._jitter()
        self.retransmit_handshake = self.initiation_allowed_at

    def awaits_response(self, now: float) -> bool:
        """Whether a handshake response may still complete the initiation in flight.

        Only until that initiation's retransmit deadline (REKEY_TIMEOUT + jitter after it was sent, whitepaper 6.4):
        by then the initiator has sent a newer initiation or given up on the attempt. Both sides date the session
        from their own step of the handshake (the responder when it answers, the initiator when the answer
        arrives), and the session limits of whitepaper 6.2 hold only while those dates agree to within about a
        REKEY_TIMEOUT: the responder's keys die REJECT_AFTER_TIME after its date, the initiator rekeys by its own.
        A response delayed past the give-up (or processed after an overdue tick) would start a session the
        responder expires long before the initiator thinks of rekeying, losing packets until the initiator hears
        nothing back. wireguard-go's ConsumeMessageResponse checks only the handshake state, not its age, so after
        giving up it still takes up the last initiation's response until the key material is zeroed.
        """
        return self.retransmit_handshake is not None and now < self.retransmit_handshake

    def handshake_initiation_requested(self) -> None:
        """Should be called when a new (not retransmitted) handshake is wanted: the attempt budget starts over."""
        self.handshake_attempts = 0

    def handshake_complete(self) -> None:
        """Should be called after a handshake response is consumed, or a responder session is confirmed by data."""
        self.retransmit_handshake = None
        self.handshake_attempts = 0
        self.initiation_allowed_at = float("-inf")
        self.sent_last_minute_handshake = False

    def session_derived(self, now: float) -> None:
        """Should be called after transport keys are derived (as initiator or responder)."""
        self.zero_key_material = now + constants.ZERO_KEY_MATERIAL_AFTER_REJECTS * self._timing.reject_after_time

    def key_material_zeroed(self) -> None:
        """Should be called after all keys of the peer were erased: nothing is left to retransmit or keep alive."""
        self.retransmit_handshake = None
        self.send_keepalive = None
        self.new_handshake = None
        self.zero_key_material = None

    def stop(self) -> None:
        """Disarm everything (the peer is being removed)."""
        self.key_material_zeroed()
        self.persistent_keepalive = None

    def next_deadline(self) -> float | None:
        deadlines = [
            deadline
            for deadline in (
                self.retransmit_handshake,
                self.send_keepalive,
                self.new_handshake,
                self.zero_key_material,
                self.persistent_keepalive,
            )
            if deadline is not None
        ]
        return min(deadlines) if deadlines else None

    def due(self, now: float) -> list[TimerEvent]:
        """Fire every timer whose deadline is <= now, in a fixed order, updating state as firing implies."""
        events: list[TimerEvent] = []
        if self.retransmit_handshake is not None and self.retransmit_handshake <= now:
            self.retransmit_handshake = None
            if self.handshake_attempts + 1 >= self._max_handshake_attempts:
                events.append(TimerEvent.HANDSHAKE_GAVE_UP)
                self.send_keepalive = None
                if self.zero_key_material is None:
                    self.zero_key_material = (
                        now + constants.ZERO_KEY_MATERIAL_AFTER_REJECTS * self._timing.reject_after_time
                    )
            else:
                self.handshake_attempts += 1
                events.append(TimerEvent.RETRANSMIT_HANDSHAKE)
        if self.send_keepalive is not None and self.send_keepalive <= now:
            self.send_keepalive = None
            events.append(TimerEvent.SEND_KEEPALIVE)
        if self.new_handshake is not None and self.new_handshake <= now:
            self.new_handshake = None
            events.append(TimerEvent.NEW_HANDSHAKE)
        if self.zero_key_material is not None and self.zero_key_material <= now:
            self.zero_key_material = None
            events.append(TimerEvent.ZERO_KEY_MATERIAL)
        if self.persistent_keepalive is not None and self.persistent_keepalive <= now:
            self.persistent_keepalive = None
            events.append(TimerEvent.PERSISTENT_KEEPALIVE)
        return events
