"""What the protocol core hands back to the I/O layer: datagrams to send, packets for the TUN, counted drops."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

Endpoint = tuple[str, int]
"""(IP address string, UDP port) of a peer; IPv6 without scope or flowinfo."""


class DropReason(enum.Enum):
    """Why an input produced nothing useful. Every drop is counted once, on the peer it belongs to or the device."""

    TOO_SHORT = "too short for its message type"
    UNKNOWN_TYPE = "unknown message type"
    BAD_LENGTH = "wrong length for its message type"
    INVALID_MAC1 = "mac1 does not match our public key"
    DECRYPT_FAILED = "authenticated decryption failed"
    UNKNOWN_PEER = "initiation from a static key that is not a configured peer"
    UNKNOWN_RECEIVER_INDEX = "receiver index matches no handshake or session"
    UNEXPECTED_MESSAGE = "handshake message does not fit the handshake state"
    INVALID_PUBLIC_KEY = "Diffie-Hellman with the received key gives the all-zero point"
    REPLAYED_COUNTER = "transport counter already seen or too old"
    STALE_TIMESTAMP = "initiation timestamp not newer than the last accepted one"
    RATE_LIMITED = "handshake messages arrive faster than allowed"
    COOKIE_REQUIRED = "under load and mac2 missing or invalid: answered with a cookie reply"
    EXPIRED_KEYPAIR = "session is past its time or message limit"
    DISALLOWED_SOURCE_IP = "inner source address is not in the sending peer's allowed IPs"
    NO_ROUTE_TO_PEER = "destination is in no peer's allowed IPs"
    NO_ENDPOINT = "the peer has no known endpoint yet"
    INVALID_IP_PACKET = "not a well-formed IPv4 or IPv6 packet"
    QUEUE_FULL = "the queue of packets waiting for a session overflowed"
    HANDSHAKE_GAVE_UP = "no session after REKEY_ATTEMPT_TIME: waiting packets discarded"
    KEY_MATERIAL_ZEROED = "waiting packets discarded when the session keys were erased"
    ROAMING_REFUSED = "authenticated, but from an address the peer may not roam to (other family, or off loopback)"


# SendDatagram and WriteTunnel are made once per packet on the data path. A frozen dataclass's generated __init__
# assigns each field through object.__setattr__, measured 2-3x slower than storing through the slot descriptors
# directly, which is what their hand-written __init__ does (the classes stay frozen to everyone else).


@dataclass(frozen=True, slots=True, init=False)
class SendDatagram:
    """Send `data` as one UDP datagram to `endpoint`."""

    endpoint: Endpoint
    data: bytes

    def __init__(self, endpoint: Endpoint, data: bytes) -> None:
        _set_send_endpoint(self, endpoint)
        _set_send_data(self, data)


@dataclass(frozen=True, slots=True, init=False)
class WriteTunnel:
    """Write `packet` (one IP packet) to the TUN device."""

    packet: bytes

    def __init__(self, packet: bytes) -> None:
        _set_tunnel_packet(self, packet)


_set_send_endpoint: Final = SendDatagram.__dict__["endpoint"].__set__
_set_send_data: Final = SendDatagram.__dict__["data"].__set__
_set_tunnel_packet: Final = WriteTunnel.__dict__["packet"].__set__


@dataclass(frozen=True, slots=True)
class Drop:
    """An input was discarded for `reason`; it is already counted, this value only lets callers log and test."""

    reason: DropReason


Output = SendDatagram | WriteTunnel | Drop

# Drops are immutable, so one instance per reason serves every call (no allocation on a dropping hot path).
DROPS: Final[dict[DropReason, Drop]] = {reason: Drop(reason) for reason in DropReason}
