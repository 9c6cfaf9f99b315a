"""Protocol constants of WireGuard, each with its source.

Sources: the WireGuard whitepaper (https://www.wireguard.com/papers/wireguard.pdf, sections 5.4 and 6) and
wireguard-go's device/constants.go, device/cookie.go and ratelimiter/ratelimiter.go, which define the reference
behaviour where the whitepaper leaves a number open.
"""

from __future__ import annotations

from typing import Final

# Whitepaper 5.4: the Noise protocol name hashed into the initial chaining key, and the prologue.
CONSTRUCTION: Final = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER: Final = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
# Whitepaper 5.4.4 and 5.4.7: domain-separation labels of the mac1 key and the cookie encryption key.
LABEL_MAC1: Final = b"mac1----"
LABEL_COOKIE: Final = b"cookie--"

# Whitepaper 5.4: message types (one byte followed by three reserved zero bytes, read as a little-endian u32).
MESSAGE_INITIATION: Final = 1
MESSAGE_RESPONSE: Final = 2
MESSAGE_COOKIE_REPLY: Final = 3
MESSAGE_TRANSPORT: Final = 4

# Whitepaper 5.4.2, 5.4.3, 5.4.7, 5.4.6: wire sizes in bytes.
KEY_SIZE: Final = 32
MAC_SIZE: Final = 16
AEAD_TAG_SIZE: Final = 16
TIMESTAMP_SIZE: Final = 12  # TAI64N
COOKIE_NONCE_SIZE: Final = 24  # XChaCha20-Poly1305
COOKIE_SIZE: Final = 16
INITIATION_SIZE: Final = 148
RESPONSE_SIZE: Final = 92
COOKIE_REPLY_SIZE: Final = 64
TRANSPORT_HEADER_SIZE: Final = 16  # type, receiver index, 64-bit counter
TRANSPORT_MIN_SIZE: Final = TRANSPORT_HEADER_SIZE + AEAD_TAG_SIZE  # an encrypted zero-length keepalive
# Whitepaper 5.4.6: plaintext is zero-padded to a multiple of 16 bytes (capped at the MTU).
PADDING_MULTIPLE: Final = 16

# Whitepaper 6.1 (and wireguard-go device/constants.go): session limits.
REKEY_AFTER_MESSAGES: Final = 2**60
REJECT_AFTER_MESSAGES: Final = 2**64 - 2**13 - 1
REKEY_AFTER_TIME: Final = 120.0
REJECT_AFTER_TIME: Final = 180.0
REKEY_ATTEMPT_TIME: Final = 90.0
REKEY_TIMEOUT: Final = 5.0
KEEPALIVE_TIMEOUT: Final = 10.0
# wireguard-go device/constants.go RekeyTimeoutJitterMaxMs: retransmits wait REKEY_TIMEOUT + [0, 334) ms.
REKEY_TIMEOUT_JITTER_MAX_MS: Final = 334
# Whitepaper 6.3: key material of a session is erased after three times REJECT_AFTER_TIME without a new one.
ZERO_KEY_MATERIAL_AFTER_REJECTS: Final = 3

# Whitepaper 5.4.7 / wireguard-go device/cookie.go CookieRefreshTime: the cookie secret rotates, and a received
# cookie stays usable, for two minutes.
COOKIE_REFRESH_TIME: Final = 120.0

# wireguard-go device/constants.go HandshakeInitationRate: at most 50 initiations per second are consumed from one
# peer (a flood of replayed-but-newer initiations cannot keep the responder busy).
HANDSHAKE_INITIATION_RATE: Final = 1.0 / 50
# wireguard-go ratelimiter/ratelimiter.go: under load, handshake messages per source address are limited to a token
# bucket of 20 per second with a burst of 5; entries idle for a second are forgotten.
RATELIMIT_PACKETS_PER_SECOND: Final = 20
RATELIMIT_BURST: Final = 5
RATELIMIT_GARBAGE_AFTER: Final = 1.0

# wireguard-go device/constants.go QueueStagedSize: packets waiting for a session, per peer.
STAGED_QUEUE_SIZE: Final = 128

# TAI64N (https://cr.yp.to/libtai/tai64.html): label of second 0 of 1970 TAI is 2^62 + 10 (TAI-UTC in 1970).
TAI64_EPOCH: Final = 2**62 + 10
# wireguard-go device/noise-protocol.go: the nanoseconds of initiation timestamps are rounded down to 2^24 ns
# (about 16 ms) so they do not leak the sender's fine-grained clock.
TIMESTAMP_WHITENER_MASK: Final = 0xFFFFFF

# The tunnel MTU, as wg-quick(8) picks it (wireguard-tools src/wg-quick/linux.bash set_mtu_up): 1500 minus the
# 80 bytes a data message adds over an IPv6 underlay (IPv6 header 40 + UDP 8 + whitepaper 5.4.6 data header 16 +
# Poly1305 tag 16). The TUN device gets it, and padding never grows a packet past it.
DEFAULT_MTU: Final = 1420
