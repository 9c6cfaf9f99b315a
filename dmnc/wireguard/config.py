"""Configuration and live statistics of the protocol core."""

from __future__ import annotations

import collections
import ipaddress
from dataclasses import dataclass, field

from dmnc.wireguard import constants
from dmnc.wireguard.outputs import DropReason, Endpoint

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Timing:
    """Protocol timers and limits in seconds and messages (whitepaper 6.1); tests shorten them freely."""

    rekey_after_time: float = constants.REKEY_AFTER_TIME
    reject_after_time: float = constants.REJECT_AFTER_TIME
    rekey_attempt_time: float = constants.REKEY_ATTEMPT_TIME
    rekey_timeout: float = constants.REKEY_TIMEOUT
    keepalive_timeout: float = constants.KEEPALIVE_TIMEOUT
    rekey_after_messages: int = constants.REKEY_AFTER_MESSAGES
    reject_after_messages: int = constants.REJECT_AFTER_MESSAGES


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """One peer: its static public key, optional preshared key, the addresses it may use, where to reach it."""

    public_key: bytes
    preshared_key: bytes | None = None
    allowed_ips: tuple[IPNetwork, ...] = ()
    endpoint: Endpoint | None = None
    persistent_keepalive: int = 0  # seconds, 0 = off
    roam_anywhere: bool = True
    """True: the endpoint follows every authenticated packet (whitepaper 2.1). False: only within its address family
    and not off loopback (dmnc.wireguard.roaming); packets that would move it further are dropped as ROAMING_REFUSED."""


@dataclass(slots=True)
class PeerStats:
    """Live counters of one peer, updated in place by the core and read by status reporting.

    tx_* count every datagram sent to the peer (handshake, cookie, data, keepalive); rx_* every datagram from it that
    authenticated. `endpoint` roams to the source of the last authenticated datagram.
    """

    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    last_handshake: float | None = None
    endpoint: Endpoint | None = None
    drops: collections.Counter[DropReason] = field(default_factory=collections.Counter)
    handshakes: int = 0
