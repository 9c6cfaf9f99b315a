"""Transport sessions: a keypair per completed handshake, and the current/previous/next rotation of one peer
(whitepaper 5.4.5 and 6; wireguard-go device/keypair.go and BeginSymmetricSession/ReceivedWithKeypair).
"""

from __future__ import annotations

from typing import Any

from nacl._sodium import ffi

from dmnc.wireguard.config import Timing
from dmnc.wireguard.replay import ReplayWindow


class Keypair:
    """One direction-split pair of transport keys with its counters and replay window.

    The keys live in bytearrays (zeroable in place) with cffi pointers made once, so the data path hands libsodium
    a pointer instead of converting a key per packet.
    """

    __slots__ = (
        "created",
        "is_initiator",
        "last_minute_rekey_at",
        "local_index",
        "receive_key",
        "receive_key_pointer",
        "rekey_at",
        "remote_index",
        "replay",
        "send_counter",
        "send_key",
        "send_key_pointer",
        "usable_until",
    )

    def __init__(
        self,
        send_key: bytes,
        receive_key: bytes,
        *,
        is_initiator: bool,
        local_index: int,
        remote_index: int,
        created: float,
        timing: Timing,
    ) -> None:
        self.send_key = bytearray(send_key)
        self.receive_key = bytearray(receive_key)
        self.send_key_pointer: Any = ffi.from_buffer(self.send_key)
        self.receive_key_pointer: Any = ffi.from_buffer(self.receive_key)
        self.is_initiator = is_initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = created
        self.send_counter = 0
        self.replay = ReplayWindow(timing.reject_after_messages)
        # The session's time limits as absolute deadlines, so the data path compares one float per check.
        # Whitepaper 6.1/6.2: nothing is sent or accepted after REJECT_AFTER_TIME; the initiator rekeys when
        # sending after REKEY_AFTER_TIME, and when still receiving REKEY_TIMEOUT + KEEPALIVE_TIMEOUT before the end.
        self.usable_until = created + timing.reject_after_time
        never = float("inf")
        self.rekey_at = created + timing.rekey_after_time if is_initiator else never
        self.last_minute_rekey_at = (
            created + timing.reject_after_time - timing.keepalive_timeout - timing.rekey_timeout
            if is_initiator
            else never
        )

    def zero(self) -> None:
        """Overwrite the key bytes in place, so nothing can encrypt or decrypt with this keypair again."""
        self.send_key[:] = bytes(len(self.send_key))
        self.receive_key[:] = bytes(len(self.receive_key))


class Keypairs:
    """The sessions of one peer.

    `current` sends; `previous` still receives packets that were in flight during a rekey; `next` is a session
    we answered as responder and may only send with once the initiator proves it has it (its first data packet).
    """

    __slots__ = ("current", "next", "previous")

    def __init__(self) -> None:
        self.current: Keypair | None = None
        self.previous: Keypair | None = None
        self.next: Keypair | None = None

    def install(self, keypair: Keypair) -> list[Keypair]:
        """Adopt a freshly derived keypair; returns the keypairs that fell out and must be retired."""
        retired: list[Keypair] = []
        if keypair.is_initiator:
            # We initiated, so the peer holds the session already: it becomes current at once.
            if self.next is not None:
                # An unconfirmed responder session is newer than current, so it is the better one to keep receiving on.
                retired.extend(k for k in (self.previous, self.current) if k is not None)
                self.previous = self.next
                self.next = None
            else:
                if self.previous is not None:
                    retired.append(self.previous)
                self.previous = self.current
            self.current = keypair
        else:
            retired.extend(k for k in (self.next, self.previous) if k is not None)
            self.next = keypair
            self.previous = None
        return retired

    def confirm_next(self) -> Keypair | None:
        """The `next` keypair authenticated a packet from the initiator: rotate it to current.

        Returns the keypair that fell out (to retire), or None.
        """
        retired = self.previous
        self.previous = self.current
        self.current = self.next
        self.next = None
        return retired

    def all(self) -> list[Keypair]:
        return [k for k in (self.current, self.previous, self.next) if k is not None]

    def clear(self) -> list[Keypair]:
        dropped = self.all()
        self.current = self.previous = self.next = None
        return dropped
