"""Everything the device keeps about one peer."""

from __future__ import annotations

import collections

from dmnc.wireguard import constants
from dmnc.wireguard.config import PeerConfig, PeerStats
from dmnc.wireguard.cookie import CookieGenerator
from dmnc.wireguard.noise import Handshake
from dmnc.wireguard.session import Keypairs
from dmnc.wireguard.timers import PeerTimers


class Peer:
    """One configured peer: its handshake, sessions, timers, packets waiting for a session, and live stats."""

    __slots__ = ("config", "cookies", "handshake", "keypairs", "staged", "stats", "timers")

    def __init__(self, config: PeerConfig, handshake: Handshake, timers: PeerTimers) -> None:
        self.config = config
        self.handshake = handshake
        self.cookies = CookieGenerator(config.public_key)
        self.keypairs = Keypairs()
        self.timers = timers
        self.stats = PeerStats(endpoint=config.endpoint)
        # Packets from the TUN waiting for a usable session; the oldest is dropped on overflow (wireguard-go).
        self.staged: collections.deque[bytes] = collections.deque()

    def stage(self, packet: bytes) -> bool:
        """Queue `packet` for the next session; False when the queue was full and its oldest packet was dropped."""
        overflowed = len(self.staged) >= constants.STAGED_QUEUE_SIZE
        if overflowed:
            self.staged.popleft()
        self.staged.append(packet)
        return not overflowed
