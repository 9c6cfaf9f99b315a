"""The WireGuard device: our static identity, the peers, cryptokey routing and every protocol decision.

Sans-I/O in the style of boringtun's `Tunn` and aioquic's connection: the I/O layer feeds IP packets from the TUN
to `encapsulate`, every UDP datagram to `decapsulate`, calls `tick` at `next_deadline()`, and carries out the
returned `Output` values. `now` is a monotonic float supplied by the caller; randomness comes from `rng`.
"""

from __future__ import annotations

import collections
import dataclasses
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from dmnc.wireguard import constants, crypto, keys, messages, noise
from dmnc.wireguard.allowedips import AllowedIPs
from dmnc.wireguard.config import IPNetwork, PeerConfig, PeerStats, Timing
from dmnc.wireguard.cookie import CookieChecker, CookieError
from dmnc.wireguard.messages import CookieReply, Initiation, MessageError, Response
from dmnc.wireguard.outputs import DROPS, Drop, DropReason, Endpoint, Output, SendDatagram, WriteTunnel
from dmnc.wireguard.peer import Peer
from dmnc.wireguard.ratelimit import RateLimiter
from dmnc.wireguard.roaming import restricted_roam_allowed
from dmnc.wireguard.session import Keypair
from dmnc.wireguard.timers import PeerTimers, TimerEvent
from dmnc.wireguard.transport import MAX_PACKET_SIZE, TransportCipher

_TRANSPORT_HEADER: Final = messages.TRANSPORT_HEADER
_HANDSHAKE_PREFIXES: Final = frozenset(
    struct.pack("<I", kind)
    for kind in (constants.MESSAGE_INITIATION, constants.MESSAGE_RESPONSE, constants.MESSAGE_COOKIE_REPLY)
)
_IPV4_HEADER_SIZE: Final = 20  # RFC 791 minimum header
_IPV6_HEADER_SIZE: Final = 40  # RFC 8200 fixed header
_IP_LENGTH: Final = struct.Struct(">H")
_KEEPALIVE: Final = b""
# An initiator retries after REKEY_TIMEOUT (whitepaper 6.1): an unanswered initiation older than that has been
# superseded by the next one, and answering it would only start a handshake the initiator has given up on.
UNMATCHED_INITIATION_MAX_AGE: Final = constants.REKEY_TIMEOUT


@dataclass(frozen=True, slots=True)
class _UnmatchedInitiation:
    """An initiation that passed mac1 and decrypted its static key, which was no peer's (yet)."""

    datagram: bytes
    source: Endpoint
    static_key: bytes
    received_at: float


class PeerConfigError(ValueError):
    """A peer configuration the device cannot accept (wrong key sizes, unusable, duplicate or own key)."""


class Device:
    """A WireGuard interface without I/O. Methods never raise on network input; drops are counted and returned."""

    def __init__(
        self,
        private_key: bytes,
        *,
        rng: Callable[[int], bytes],
        wall_offset: float,
        timing: Timing = Timing(),  # noqa: B008  # frozen dataclass, a shared default is safe
        mtu: int = constants.DEFAULT_MTU,
    ) -> None:
        """`now + wall_offset` must be UNIX time (it dates initiations); `mtu` caps the padding of data packets."""
        if len(private_key) != constants.KEY_SIZE:
            raise PeerConfigError(f"private key must be {constants.KEY_SIZE} bytes, got {len(private_key)}")
        self.public_key = keys.public_key(private_key)
        self.drops: collections.Counter[DropReason] = collections.Counter()
        self._local = noise.LocalIdentity(private_key, self.public_key)
        self._rng = rng
        self._wall_offset = wall_offset
        self._timing = timing
        self._reject_after_messages = timing.reject_after_messages
        self._rekey_after_messages = timing.rekey_after_messages
        self._peers: dict[bytes, Peer] = {}
        self._routes: AllowedIPs[Peer] = AllowedIPs()
        # Local indices (whitepaper 5.4.1) of handshakes in flight and of live sessions; one shared index space.
        self._handshake_indices: dict[int, Peer] = {}
        self._keypair_indices: dict[int, tuple[Peer, Keypair]] = {}
        self._cipher = TransportCipher(mtu)
        self._cookie_checker = CookieChecker(self.public_key, rng)
        self._ratelimiter = RateLimiter()
        # The newest initiation from a key that is no peer (at most one: memory an unknown sender can claim stays
        # bounded), for `answer_unmatched_initiation` once that key becomes a peer.
        self._unmatched_initiation: _UnmatchedInitiation | None = None

    # Configuration

    def add_peer(self, config: PeerConfig) -> PeerStats:
        if len(config.public_key) != constants.KEY_SIZE:
            raise PeerConfigError(f"peer public key must be {constants.KEY_SIZE} bytes, got {len(config.public_key)}")
        if config.preshared_key is not None and len(config.preshared_key) != constants.KEY_SIZE:
            raise PeerConfigError(f"preshared key must be {constants.KEY_SIZE} bytes, got {len(config.preshared_key)}")
        if config.public_key == self.public_key:
            raise PeerConfigError("a peer cannot have the device's own public key")
        if config.public_key in self._peers:
            raise PeerConfigError(f"peer {keys.encode_key(config.public_key)} is already configured")
        if config.persistent_keepalive < 0:
            raise PeerConfigError("persistent keepalive must be >= 0 seconds")
        try:
            handshake = noise.Handshake.for_peer(self._local, config.public_key, config.preshared_key)
        except crypto.InvalidPublicKeyError:
            raise PeerConfigError(
                f"peer public key {keys.encode_key(config.public_key)} is a low-order point: no handshake can succeed"
            ) from None
        timers = PeerTimers(self._timing, self._jitter, config.persistent_keepalive)
        peer = Peer(config, handshake, timers)
        if config.endpoint is not None and config.persistent_keepalive > 0:
            # Like wireguard-go on configuration: a peer with an endpoint and persistent keepalive is contacted
            # at once, so the tunnel comes up without waiting for traffic (the I/O layer ticks a past deadline now).
            timers.persistent_keepalive = float("-inf")
        self._peers[config.public_key] = peer
        for network in config.allowed_ips:
            self._routes.insert(network, peer)
        return peer.stats

    def set_allowed_ips(self, public_key: bytes, allowed_ips: Iterable[IPNetwork]) -> None:
        """Replace a peer's allowed IPs (whitepaper 2, cryptokey routing): from now on it receives exactly the
        packets routed to these networks and may send only from them. Sessions and counters are untouched."""
        peer = self._configured_peer(public_key)
        networks = tuple(allowed_ips)
        peer.config = dataclasses.replace(peer.config, allowed_ips=networks)
        self._routes.remove_value(peer)
        for network in networks:
            self._routes.insert(network, peer)

    def remove_peer(self, public_key: bytes) -> None:
        peer = self._configured_peer(public_key)
        del self._peers[public_key]
        self._zero_key_material(peer)
        peer.timers.stop()
        self._routes.remove_value(peer)

    def _configured_peer(self, public_key: bytes) -> Peer:
        peer = self._peers.get(public_key)
        if peer is None:
            raise PeerConfigError(f"no peer {keys.encode_key(public_key) if len(public_key) == 32 else public_key!r}")
        return peer

    def answer_unmatched_initiation(self, now: float) -> list[Output]:
        """Answer the newest initiation that came from a key that was no peer, if that key is one now.

        Call it right after `add_peer`. The Docker VM's key becomes known only with the setup result, and by then the
        VM has already sent its first initiation, which was dropped as UNKNOWN_PEER; answering it now saves the
        initiator's REKEY_TIMEOUT (5 s) retry. Replaying is what a slow network would have done: the initiation's
        mac1 and TAI64N timestamp are checked again as usual, and an initiator that has moved on ignores the
        response. An initiation older than UNMATCHED_INITIATION_MAX_AGE is forgotten; one from a key that is still
        no peer is kept for a later call. Returns the outputs of processing it, nothing when none was answered.
        """
        pending = self._unmatched_initiation
        if pending is None:
            return []
        if now - pending.received_at > UNMATCHED_INITIATION_MAX_AGE:
            self._unmatched_initiation = None
            return []
        if pending.static_key not in self._peers:
            return []
        self._unmatched_initiation = None
        return self._receive_initiation(pending.datagram, pending.source, now, under_load=False)

    def peer_stats(self) -> dict[bytes, PeerStats]:
        return {key: peer.stats for key, peer in self._peers.items()}

    # TUN -> network

    def encapsulate(self, packet: bytes, now: float) -> list[Output]:
        """Route an IP packet from the TUN by destination to its peer and encrypt it, or queue it and handshake.

        Returns the data datagram (plus an initiation when the session is due for a rekey); or, without a usable
        session, nothing or an initiation while the packet waits in the peer's queue (a Drop(NO_ENDPOINT) then
        means the initiation could not be sent yet, not that the packet is lost); or a Drop for the packet.
        """
        length = len(packet)
        if length >= _IPV4_HEADER_SIZE and packet[0] >> 4 == 4:
            peer = self._routes.lookup_v4(packet[16:20])
        elif length >= _IPV6_HEADER_SIZE and packet[0] >> 4 == 6:
            peer = self._routes.lookup_v6(packet[24:40])
        else:
            return [self._device_drop(DropReason.INVALID_IP_PACKET)]
        if length > MAX_PACKET_SIZE:
            return [self._device_drop(DropReason.INVALID_IP_PACKET)]
        if peer is None:
            return [self._device_drop(DropReason.NO_ROUTE_TO_PEER)]
        keypair = peer.keypairs.current
        if (
            keypair is None
            or peer.staged
            or keypair.send_counter >= self._reject_after_messages
            or now >= keypair.usable_until
        ):
            outputs: list[Output] = []
            if not peer.stage(packet):
                outputs.append(self._peer_drop(peer, DropReason.QUEUE_FULL))
            outputs.extend(self._send_staged(peer, now))
            return outputs
        return self._send_data(peer, keypair, packet, now)

    def _send_data(self, peer: Peer, keypair: Keypair, packet: bytes, now: float) -> list[Output]:
        """Encrypt one packet (b"" = keepalive) with a keypair known to be usable, then keep the key fresh."""
        endpoint = peer.stats.endpoint
        if endpoint is None:
            return [self._peer_drop(peer, DropReason.NO_ENDPOINT)]
        counter = keypair.send_counter
        keypair.send_counter = counter + 1
        datagram = self._cipher.seal(keypair, counter, packet)
        stats = peer.stats
        stats.tx_bytes += len(datagram)
        stats.tx_packets += 1
        peer.timers.packet_sent(now, bool(packet))
        outputs: list[Output] = [SendDatagram(endpoint, datagram)]
        # Whitepaper 6.2: the initiator of a session starts the next handshake once it is old or well used.
        if counter >= self._rekey_after_messages or now >= keypair.rekey_at:
            outputs.extend(self._initiate(peer, now, retry=False))
        return outputs

    def _send_staged(self, peer: Peer, now: float) -> list[Output]:
        """Send the queued packets with the current session, or start a handshake to get one."""
        outputs: list[Output] = []
        while peer.staged:
            keypair = peer.keypairs.current
            if keypair is None or keypair.send_counter >= self._reject_after_messages or now >= keypair.usable_until:
                outputs.extend(self._initiate(peer, now, retry=False))
                break
            if peer.stats.endpoint is None:
                outputs.append(self._peer_drop(peer, DropReason.NO_ENDPOINT))
                break
            outputs.extend(self._send_data(peer, keypair, peer.staged.popleft(), now))
        return outputs

    def _send_keepalive(self, peer: Peer, now: float) -> list[Output]:
        """An empty data packet, unless real packets are waiting anyway (they serve the same purpose)."""
        if not peer.staged:
            peer.staged.append(_KEEPALIVE)
        return self._send_staged(peer, now)

    # Handshake, sending side

    def _initiate(self, peer: Peer, now: float, *, retry: bool) -> list[Output]:
        """Send a handshake initiation unless the last one went out less than REKEY_TIMEOUT (+ jitter) ago."""
        if not retry:
            peer.timers.handshake_initiation_requested()
        if not peer.timers.may_initiate(now):
            return []
        endpoint = peer.stats.endpoint
        if endpoint is None:
            # The host learns the VM's endpoint from the VM's first handshake; until then, keep retrying on the
            # normal schedule so the wait ends with the usual give-up if that never happens.
            peer.timers.handshake_initiated(now)
            return [self._peer_drop(peer, DropReason.NO_ENDPOINT)]
        self._release_handshake_index(peer)
        index = self._allocate_index()
        timestamp = crypto.tai64n(now + self._wall_offset)
        try:
            initiation = noise.create_initiation(
                peer.handshake, self._local, keys.generate_private_key(self._rng), timestamp, index
            )
        except noise.HandshakeError as error:
            return [self._peer_drop(peer, error.reason)]
        self._handshake_indices[index] = peer
        datagram = peer.cookies.seal(initiation.pack(), now)
        peer.stats.tx_bytes += len(datagram)
        peer.stats.tx_packets += 1
        peer.timers.packet_sent(now, False)
        peer.timers.handshake_initiated(now)
        return [SendDatagram(endpoint, datagram)]

    # Network -> TUN

    def decapsulate(self, datagram: bytes, source: Endpoint, now: float, *, under_load: bool = False) -> list[Output]:
        """Handle any UDP datagram from `source` (an IP literal and port). Never raises on any input bytes.

        Data yields WriteTunnel (keepalives yield nothing), possibly with queued packets now sent. Handshake
        messages yield the response or the queued packets / a keepalive confirming the new session. `under_load`
        (the caller's handshake queue is filling up) demands a valid mac2: without one the answer is a cookie reply.
        """
        if len(datagram) >= constants.TRANSPORT_MIN_SIZE:
            kind, receiver, counter = _TRANSPORT_HEADER.unpack_from(datagram)
            if kind == constants.MESSAGE_TRANSPORT:
                return self._receive_transport(datagram, receiver, counter, source, now)
        try:
            kind = messages.message_type_untrusted(datagram)
            if kind == constants.MESSAGE_INITIATION:
                return self._receive_initiation(datagram, source, now, under_load)
            if kind == constants.MESSAGE_RESPONSE:
                return self._receive_response(datagram, source, now, under_load)
            if kind == constants.MESSAGE_COOKIE_REPLY:
                return self._receive_cookie_reply(datagram, now)
            return [self._device_drop(DropReason.TOO_SHORT)]  # transport data shorter than header and tag
        except MessageError as error:
            return [self._device_drop(error.reason)]

    def _receive_transport(  # noqa: PLR0911  # one early return per drop reason, kept inline on the hot path
        self, datagram: bytes, receiver: int, counter: int, source: Endpoint, now: float
    ) -> list[Output]:
        entry = self._keypair_indices.get(receiver)
        if entry is None:
            return [self._device_drop(DropReason.UNKNOWN_RECEIVER_INDEX)]
        peer, keypair = entry
        if counter >= self._reject_after_messages or now >= keypair.usable_until:
            return [self._peer_drop(peer, DropReason.EXPIRED_KEYPAIR)]
        plaintext = self._cipher.open(keypair, counter, datagram)
        if plaintext is None:
            return [self._peer_drop(peer, DropReason.DECRYPT_FAILED)]
        # Before the replay window takes the counter: the same packet arriving from where the peer may be keeps it.
        if source != peer.stats.endpoint and self._roaming_refused(peer, source):
            return [self._peer_drop(peer, DropReason.ROAMING_REFUSED)]
        if not keypair.replay.accept(counter):
            return [self._peer_drop(peer, DropReason.REPLAYED_COUNTER)]

        stats = peer.stats
        stats.rx_bytes += len(datagram)
        stats.rx_packets += 1
        stats.endpoint = source  # roaming (whitepaper 2.1): reply to where authenticated packets come from
        timers = peer.timers
        keypairs = peer.keypairs
        # Rarely anything besides the packet itself; the list is only built when something is.
        outputs: list[Output] | None = None
        if keypair is keypairs.next:
            # The initiator used the session we answered: it is confirmed and may now send (whitepaper 5.4.5).
            retired = keypairs.confirm_next()
            if retired is not None:
                self._retire(retired)
            self._handshake_completed(peer, now)
            outputs = self._send_staged(peer, now)
        current = keypairs.current
        if current is not None and now >= current.last_minute_rekey_at and not timers.sent_last_minute_handshake:
            # Whitepaper 6.2: an initiator that still only receives rekeys shortly before the session dies.
            timers.sent_last_minute_handshake = True
            outputs = (outputs or []) + self._initiate(peer, now, retry=False)
        if not plaintext:
            timers.packet_received(now, False)
            return outputs or []  # keepalive
        timers.packet_received(now, True)
        inner = self._inner_packet(peer, plaintext)
        if outputs is None:
            return [inner]
        outputs.append(inner)
        return outputs

    def _inner_packet(self, peer: Peer, plaintext: bytes) -> WriteTunnel | Drop:
        """The inner IP packet without padding, if well-formed and from an address the peer may use."""
        version = plaintext[0] >> 4
        if version == 4 and len(plaintext) >= _IPV4_HEADER_SIZE:
            length = _IP_LENGTH.unpack_from(plaintext, 2)[0]
            owner = self._routes.lookup_v4(plaintext[12:16])
            minimum = _IPV4_HEADER_SIZE
        elif version == 6 and len(plaintext) >= _IPV6_HEADER_SIZE:
            length = _IPV6_HEADER_SIZE + _IP_LENGTH.unpack_from(plaintext, 4)[0]
            owner = self._routes.lookup_v6(plaintext[8:24])
            minimum = _IPV6_HEADER_SIZE
        else:
            return self._peer_drop(peer, DropReason.INVALID_IP_PACKET)
        if length < minimum or length > len(plaintext):
            return self._peer_drop(peer, DropReason.INVALID_IP_PACKET)
        if owner is not peer:
            return self._peer_drop(peer, DropReason.DISALLOWED_SOURCE_IP)
        return WriteTunnel(plaintext if length == len(plaintext) else plaintext[:length])

    # Handshake, receiving side

    def _admit_handshake(
        self, datagram: bytes, sender: int, source: Endpoint, now: float, under_load: bool
    ) -> list[Output] | None:
        """mac1 always; under load also mac2 (else a cookie reply) and the per-source rate limit (whitepaper 5.3)."""
        if not self._cookie_checker.check_mac1(datagram):
            return [self._device_drop(DropReason.INVALID_MAC1)]
        if under_load:
            if not self._cookie_checker.check_mac2(datagram, source, now):
                reply = self._cookie_checker.create_reply(datagram, sender, source, now)
                return [SendDatagram(source, reply.pack()), self._device_drop(DropReason.COOKIE_REQUIRED)]
            if not self._ratelimiter.allow(source[0], now):
                return [self._device_drop(DropReason.RATE_LIMITED)]
        return None

    def _receive_initiation(  # noqa: PLR0911  # one early return per drop reason, as in _receive_transport
        self, datagram: bytes, source: Endpoint, now: float, under_load: bool
    ) -> list[Output]:
        message = Initiation.parse_untrusted(datagram)
        rejected = self._admit_handshake(datagram, message.sender, source, now, under_load)
        if rejected is not None:
            return rejected
        try:
            opened = noise.open_initiation(self._local, message)
        except noise.HandshakeError as error:
            return [self._device_drop(error.reason)]
        peer = self._peers.get(opened.remote_static)
        if peer is None:
            self._unmatched_initiation = _UnmatchedInitiation(datagram, source, opened.remote_static, now)
            return [self._device_drop(DropReason.UNKNOWN_PEER)]
        if self._roaming_refused(peer, source):
            return [self._peer_drop(peer, DropReason.ROAMING_REFUSED)]
        try:
            noise.consume_initiation(peer.handshake, opened, now)
        except noise.HandshakeError as error:
            return [self._peer_drop(peer, error.reason)]
        self._authenticated_handshake_received(peer, datagram, source, now)

        # Our own initiation in flight (if any) is superseded: its state was just overwritten.
        self._release_handshake_index(peer)
        index = self._allocate_index()
        try:
            response = noise.create_response(peer.handshake, keys.generate_private_key(self._rng), index)
        except noise.HandshakeError as error:
            peer.handshake.zero()
            return [self._peer_drop(peer, error.reason)]
        self._begin_session(peer, now)
        response_datagram = peer.cookies.seal(response.pack(), now)
        peer.stats.tx_bytes += len(response_datagram)
        peer.stats.tx_packets += 1
        peer.timers.packet_sent(now, False)
        return [SendDatagram(source, response_datagram)]

    def _receive_response(self, datagram: bytes, source: Endpoint, now: float, under_load: bool) -> list[Output]:
        message = Response.parse_untrusted(datagram)
        rejected = self._admit_handshake(datagram, message.sender, source, now, under_load)
        if rejected is not None:
            return rejected
        peer = self._handshake_indices.get(message.receiver)
        if peer is None:
            return [self._device_drop(DropReason.UNKNOWN_RECEIVER_INDEX)]
        if self._roaming_refused(peer, source):
            return [self._peer_drop(peer, DropReason.ROAMING_REFUSED)]
        if not peer.timers.awaits_response(now):  # a late answer does not fit the handshake state any more
            return [self._peer_drop(peer, DropReason.UNEXPECTED_MESSAGE)]
        try:
            noise.consume_response(peer.handshake, self._local, message)
        except noise.HandshakeError as error:
            return [self._peer_drop(peer, error.reason)]
        self._authenticated_handshake_received(peer, datagram, source, now)
        del self._handshake_indices[message.receiver]
        self._begin_session(peer, now)
        self._handshake_completed(peer, now)
        # Confirm the session to the responder right away: with waiting packets, or with a keepalive.
        return self._send_keepalive(peer, now)

    def _receive_cookie_reply(self, datagram: bytes, now: float) -> list[Output]:
        reply = CookieReply.parse_untrusted(datagram)
        peer = self._handshake_indices.get(reply.receiver)
        if peer is None:
            entry = self._keypair_indices.get(reply.receiver)
            if entry is None:
                return [self._device_drop(DropReason.UNKNOWN_RECEIVER_INDEX)]
            peer = entry[0]
        try:
            peer.cookies.consume_reply(reply, now)
        except CookieError as error:
            return [self._peer_drop(peer, error.reason)]
        # The cookie is used from the next retransmission on (whitepaper 5.3): nothing is sent now.
        return []

    @staticmethod
    def _roaming_refused(peer: Peer, source: Endpoint) -> bool:
        """A peer that may not roam anywhere refuses an endpoint its roaming policy does not allow (checked before a
        message changes any state, so a refused one leaves the handshake and the replay window as they were)."""
        return not peer.config.roam_anywhere and not restricted_roam_allowed(peer.stats.endpoint, source)

    def _authenticated_handshake_received(self, peer: Peer, datagram: bytes, source: Endpoint, now: float) -> None:
        peer.stats.rx_bytes += len(datagram)
        peer.stats.rx_packets += 1
        peer.stats.endpoint = source
        peer.timers.packet_received(now, False)

    def _begin_session(self, peer: Peer, now: float) -> None:
        """Turn the completed handshake into a keypair and install it (wireguard-go BeginSymmetricSession)."""
        session = noise.derive_session(peer.handshake)
        keypair = Keypair(
            session.send_key,
            session.receive_key,
            is_initiator=session.is_initiator,
            local_index=session.local_index,
            remote_index=session.remote_index,
            created=now,
            timing=self._timing,
        )
        self._keypair_indices[keypair.local_index] = (peer, keypair)
        for retired in peer.keypairs.install(keypair):
            self._retire(retired)
        peer.timers.session_derived(now)

    def _handshake_completed(self, peer: Peer, now: float) -> None:
        peer.timers.handshake_complete()
        peer.stats.handshakes += 1
        peer.stats.last_handshake = now

    # Timers

    def tick(self, now: float) -> list[Output]:
        """Run every timer that is due: retransmits, rekeys, keepalives, give-ups, erasing old keys."""
        outputs: list[Output] = []
        for peer in list(self._peers.values()):
            for event in peer.timers.due(now):
                if event is TimerEvent.RETRANSMIT_HANDSHAKE:
                    outputs.extend(self._initiate(peer, now, retry=True))
                elif event is TimerEvent.HANDSHAKE_GAVE_UP:
                    outputs.extend(self._flush_staged(peer, DropReason.HANDSHAKE_GAVE_UP))
                elif event is TimerEvent.NEW_HANDSHAKE:
                    outputs.extend(self._initiate(peer, now, retry=False))
                elif event is TimerEvent.ZERO_KEY_MATERIAL:
                    outputs.extend(self._zero_key_material(peer))
                else:  # SEND_KEEPALIVE or PERSISTENT_KEEPALIVE
                    outputs.extend(self._send_keepalive(peer, now))
        return outputs

    def next_deadline(self) -> float | None:
        """Earliest `now` at which `tick` has work (may lie in the past: tick at once); None when idle.

        Read it again after every encapsulate/decapsulate/tick: those calls arm timers, the earliest of them
        REKEY_TIMEOUT (or the persistent keepalive interval, if shorter) after their `now`.
        """
        deadlines = [d for d in (peer.timers.next_deadline() for peer in self._peers.values()) if d is not None]
        return min(deadlines) if deadlines else None

    def _zero_key_material(self, peer: Peer) -> list[Output]:
        """Whitepaper 6.3: erase every session and the handshake in flight, and discard what waited for them."""
        for keypair in peer.keypairs.clear():
            self._retire(keypair)
        self._release_handshake_index(peer)
        peer.handshake.zero()
        peer.timers.key_material_zeroed()
        return self._flush_staged(peer, DropReason.KEY_MATERIAL_ZEROED)

    def _flush_staged(self, peer: Peer, reason: DropReason) -> list[Output]:
        dropped: list[Output] = [self._peer_drop(peer, reason) for packet in peer.staged if packet]
        peer.staged.clear()
        return dropped

    # Helpers

    @staticmethod
    def is_handshake_message(datagram: bytes) -> bool:
        """Cheap classification for the I/O layer: initiation, response or cookie reply (types 1, 2, 3)."""
        return datagram[:4] in _HANDSHAKE_PREFIXES

    def _jitter(self) -> float:
        """Random retransmit jitter in [0, REKEY_TIMEOUT_JITTER_MAX_MS) ms, in seconds (whitepaper 6.1)."""
        return int.from_bytes(self._rng(2), "little") % constants.REKEY_TIMEOUT_JITTER_MAX_MS / 1000

    def _allocate_index(self) -> int:
        """A random local index not in use by any handshake or session (whitepaper 5.4.1)."""
        while True:
            index = int.from_bytes(self._rng(4), "little")
            if index not in self._handshake_indices and index not in self._keypair_indices:
                return index

    def _release_handshake_index(self, peer: Peer) -> None:
        index = peer.handshake.local_index
        if self._handshake_indices.get(index) is peer:
            del self._handshake_indices[index]

    def _retire(self, keypair: Keypair) -> None:
        self._keypair_indices.pop(keypair.local_index, None)
        keypair.zero()

    def _device_drop(self, reason: DropReason) -> Drop:
        self.drops[reason] += 1
        return DROPS[reason]

    def _peer_drop(self, peer: Peer, reason: DropReason) -> Drop:
        peer.stats.drops[reason] += 1
        return DROPS[reason]
