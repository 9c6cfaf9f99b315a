"""Noise_IKpsk2 as WireGuard uses it (whitepaper 5.4.2 and 5.4.3): the handshake state of one peer.

Pure functions over a `Handshake` record: they take keys, ephemeral private keys, timestamps and indices as
arguments and never touch the clock, randomness or the network. Failures raise `HandshakeError` carrying the
drop reason; the handshake state is only changed once a message has fully authenticated.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from dmnc.wireguard import constants, crypto
from dmnc.wireguard.messages import Initiation, Response
from dmnc.wireguard.outputs import DropReason

# Whitepaper 5.4: Ci = HASH(CONSTRUCTION), Hi = HASH(Ci || IDENTIFIER); both are constants.
INITIAL_CHAINING_KEY: Final = crypto.hash_(constants.CONSTRUCTION)
INITIAL_HASH: Final = crypto.hash_(INITIAL_CHAINING_KEY, constants.IDENTIFIER)
_NO_PRESHARED_KEY: Final = bytes(constants.KEY_SIZE)


class HandshakeError(Exception):
    """A handshake message was rejected; `reason` is the drop it is counted as."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class HandshakeState(enum.Enum):
    ZEROED = enum.auto()
    INITIATION_CREATED = enum.auto()
    INITIATION_CONSUMED = enum.auto()
    RESPONSE_CREATED = enum.auto()
    RESPONSE_CONSUMED = enum.auto()


@dataclass(slots=True)
class LocalIdentity:
    """Our static key pair, with the hash of the responder pre-message (our public key) computed once."""

    private_key: bytes
    public_key: bytes
    responder_hash: bytes = b""

    def __post_init__(self) -> None:
        self.responder_hash = crypto.hash_(INITIAL_HASH, self.public_key)


@dataclass(slots=True)
class Handshake:
    """The handshake with one peer: static facts of the pair plus the state of the handshake in flight."""

    remote_static: bytes
    preshared_key: bytes
    # DH(S_priv_local, S_pub_remote) never changes for a pair, so it is computed once (as wireguard-go does).
    static_static: bytes
    remote_hash: bytes  # HASH(Hi || S_pub_remote): the initiator's start when this peer is the responder
    state: HandshakeState = HandshakeState.ZEROED
    chaining_key: bytes = b""
    hash: bytes = b""
    local_ephemeral: bytes = b""
    remote_ephemeral: bytes = b""
    local_index: int = 0
    remote_index: int = 0
    # Newest initiation timestamp accepted from this peer (replay protection, whitepaper 5.1).
    latest_timestamp: bytes = bytes(constants.TIMESTAMP_SIZE)
    last_initiation_consumed: float | None = None

    @classmethod
    def for_peer(cls, local: LocalIdentity, remote_static: bytes, preshared_key: bytes | None) -> Handshake:
        """Raises crypto.InvalidPublicKeyError for a low-order peer key, with which no handshake can succeed."""
        return cls(
            remote_static=remote_static,
            preshared_key=preshared_key or _NO_PRESHARED_KEY,
            static_static=crypto.x25519(local.private_key, remote_static),
            remote_hash=crypto.hash_(INITIAL_HASH, remote_static),
        )

    def zero(self) -> None:
        """Forget the handshake in flight (the pair's static facts and replay timestamp stay)."""
        self.state = HandshakeState.ZEROED
        self.chaining_key = b""
        self.hash = b""
        self.local_ephemeral = b""
        self.remote_ephemeral = b""
        self.local_index = 0
        self.remote_index = 0


def create_initiation(
    handshake: Handshake, local: LocalIdentity, ephemeral_private: bytes, timestamp: bytes, sender_index: int
) -> Initiation:
    """Initiator, whitepaper 5.4.2: build the initiation body (macs are added by the cookie layer)."""
    chaining_key = INITIAL_CHAINING_KEY
    hash_ = handshake.remote_hash
    ephemeral_public = crypto.x25519_base(ephemeral_private)
    chaining_key = crypto.kdf1(chaining_key, ephemeral_public)
    hash_ = crypto.hash_(hash_, ephemeral_public)
    try:
        chaining_key, key = crypto.kdf2(chaining_key, crypto.x25519(ephemeral_private, handshake.remote_static))
    except crypto.InvalidPublicKeyError as error:
        raise HandshakeError(DropReason.INVALID_PUBLIC_KEY, str(error)) from None
    encrypted_static = crypto.aead_encrypt(key, 0, local.public_key, hash_)
    hash_ = crypto.hash_(hash_, encrypted_static)
    chaining_key, key = crypto.kdf2(chaining_key, handshake.static_static)
    encrypted_timestamp = crypto.aead_encrypt(key, 0, timestamp, hash_)
    hash_ = crypto.hash_(hash_, encrypted_timestamp)

    handshake.state = HandshakeState.INITIATION_CREATED
    handshake.chaining_key = chaining_key
    handshake.hash = hash_
    handshake.local_ephemeral = ephemeral_private
    handshake.remote_ephemeral = b""
    handshake.local_index = sender_index
    handshake.remote_index = 0
    return Initiation(sender_index, ephemeral_public, encrypted_static, encrypted_timestamp)


@dataclass(frozen=True, slots=True)
class OpenedInitiation:
    """An initiation whose sender is identified but not yet checked for replay: the first half of consumption."""

    message: Initiation
    remote_static: bytes
    chaining_key: bytes
    hash: bytes


def open_initiation(local: LocalIdentity, message: Initiation) -> OpenedInitiation:
    """Responder, first half of whitepaper 5.4.2: decrypt the initiator's static key so the peer can be looked up."""
    chaining_key = crypto.kdf1(INITIAL_CHAINING_KEY, message.ephemeral)
    hash_ = crypto.hash_(local.responder_hash, message.ephemeral)
    try:
        chaining_key, key = crypto.kdf2(chaining_key, crypto.x25519(local.private_key, message.ephemeral))
        remote_static = crypto.aead_decrypt(key, 0, message.encrypted_static, hash_)
    except crypto.InvalidPublicKeyError as error:
        raise HandshakeError(DropReason.INVALID_PUBLIC_KEY, str(error)) from None
    except crypto.AuthenticationError as error:
        raise HandshakeError(DropReason.DECRYPT_FAILED, f"initiation static key: {error}") from None
    hash_ = crypto.hash_(hash_, message.encrypted_static)
    return OpenedInitiation(message, remote_static, chaining_key, hash_)


def consume_initiation(handshake: Handshake, opened: OpenedInitiation, now: float) -> None:
    """Responder, second half: authenticate the timestamp, reject replays and floods, then adopt the state."""
    chaining_key, key = crypto.kdf2(opened.chaining_key, handshake.static_static)
    try:
        timestamp = crypto.aead_decrypt(key, 0, opened.message.encrypted_timestamp, opened.hash)
    except crypto.AuthenticationError as error:
        raise HandshakeError(DropReason.DECRYPT_FAILED, f"initiation timestamp: {error}") from None
    if timestamp <= handshake.latest_timestamp:  # TAI64N labels are big-endian: bytes order is time order
        raise HandshakeError(DropReason.STALE_TIMESTAMP, "initiation timestamp is not newer than the last one")
    last = handshake.last_initiation_consumed
    if last is not None and now - last <= constants.HANDSHAKE_INITIATION_RATE:
        raise HandshakeError(DropReason.RATE_LIMITED, "more than 50 initiations per second from this peer")

    handshake.latest_timestamp = timestamp
    handshake.last_initiation_consumed = now
    handshake.state = HandshakeState.INITIATION_CONSUMED
    handshake.chaining_key = chaining_key
    handshake.hash = crypto.hash_(opened.hash, opened.message.encrypted_timestamp)
    handshake.remote_ephemeral = opened.message.ephemeral
    handshake.remote_index = opened.message.sender


def create_response(handshake: Handshake, ephemeral_private: bytes, sender_index: int) -> Response:
    """Responder, whitepaper 5.4.3: answer the consumed initiation."""
    if handshake.state is not HandshakeState.INITIATION_CONSUMED:
        raise HandshakeError(DropReason.UNEXPECTED_MESSAGE, "no consumed initiation to respond to")
    ephemeral_public = crypto.x25519_base(ephemeral_private)
    chaining_key = crypto.kdf1(handshake.chaining_key, ephemeral_public)
    hash_ = crypto.hash_(handshake.hash, ephemeral_public)
    try:
        chaining_key = crypto.kdf1(chaining_key, crypto.x25519(ephemeral_private, handshake.remote_ephemeral))
        chaining_key = crypto.kdf1(chaining_key, crypto.x25519(ephemeral_private, handshake.remote_static))
    except crypto.InvalidPublicKeyError as error:
        raise HandshakeError(DropReason.INVALID_PUBLIC_KEY, str(error)) from None
    chaining_key, tau, key = crypto.kdf3(chaining_key, handshake.preshared_key)
    hash_ = crypto.hash_(hash_, tau)
    encrypted_nothing = crypto.aead_encrypt(key, 0, b"", hash_)
    hash_ = crypto.hash_(hash_, encrypted_nothing)

    handshake.state = HandshakeState.RESPONSE_CREATED
    handshake.chaining_key = chaining_key
    handshake.hash = hash_
    handshake.local_ephemeral = ephemeral_private
    handshake.local_index = sender_index
    return Response(sender_index, handshake.remote_index, ephemeral_public, encrypted_nothing)


def consume_response(handshake: Handshake, local: LocalIdentity, message: Response) -> None:
    """Initiator, whitepaper 5.4.3: authenticate the response to our initiation and adopt the final state."""
    if handshake.state is not HandshakeState.INITIATION_CREATED:
        raise HandshakeError(DropReason.UNEXPECTED_MESSAGE, "response without an initiation in flight")
    chaining_key = crypto.kdf1(handshake.chaining_key, message.ephemeral)
    hash_ = crypto.hash_(handshake.hash, message.ephemeral)
    try:
        chaining_key = crypto.kdf1(chaining_key, crypto.x25519(handshake.local_ephemeral, message.ephemeral))
        chaining_key = crypto.kdf1(chaining_key, crypto.x25519(local.private_key, message.ephemeral))
    except crypto.InvalidPublicKeyError as error:
        raise HandshakeError(DropReason.INVALID_PUBLIC_KEY, str(error)) from None
    chaining_key, tau, key = crypto.kdf3(chaining_key, handshake.preshared_key)
    hash_ = crypto.hash_(hash_, tau)
    try:
        crypto.aead_decrypt(key, 0, message.encrypted_nothing, hash_)
    except crypto.AuthenticationError as error:
        raise HandshakeError(DropReason.DECRYPT_FAILED, f"response: {error}") from None
    hash_ = crypto.hash_(hash_, message.encrypted_nothing)

    handshake.state = HandshakeState.RESPONSE_CONSUMED
    handshake.chaining_key = chaining_key
    handshake.hash = hash_
    handshake.remote_ephemeral = message.ephemeral
    handshake.remote_index = message.sender


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """Transport keys derived from a completed handshake, from this side's point of view."""

    send_key: bytes
    receive_key: bytes
    is_initiator: bool
    local_index: int
    remote_index: int


def derive_session(handshake: Handshake) -> SessionKeys:
    """Whitepaper 5.4.5: (T_send_i, T_recv_i) = KDF2(C, empty); the responder uses them swapped. Zeroes the state."""
    if handshake.state is HandshakeState.RESPONSE_CONSUMED:
        is_initiator = True
    elif handshake.state is HandshakeState.RESPONSE_CREATED:
        is_initiator = False
    else:
        raise HandshakeError(DropReason.UNEXPECTED_MESSAGE, "no completed handshake to derive a session from")
    initiator_key, responder_key = crypto.kdf2(handshake.chaining_key, b"")
    send_key, receive_key = (initiator_key, responder_key) if is_initiator else (responder_key, initiator_key)
    keys = SessionKeys(send_key, receive_key, is_initiator, handshake.local_index, handshake.remote_index)
    handshake.zero()
    return keys
