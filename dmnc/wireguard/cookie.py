"""mac1, mac2 and cookie replies (whitepaper 5.3 and 5.4.4, 5.4.7): DoS protection outside of Noise.

`CookieChecker` is the receiving side (our public key): it checks mac1 always, mac2 when under load, and makes
cookie replies. `CookieGenerator` is the sending side for one peer: it adds macs to our handshake messages and
accepts the cookie replies that peer sends us.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Final

from dmnc.wireguard import constants, crypto
from dmnc.wireguard.messages import CookieReply
from dmnc.wireguard.outputs import DropReason, Endpoint

_MACS_SIZE: Final = 2 * constants.MAC_SIZE
_NO_MAC: Final = bytes(constants.MAC_SIZE)


class CookieError(Exception):
    """A cookie reply was rejected; `reason` is the drop it is counted as."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _source_bytes(source: Endpoint) -> bytes:
    """The sender's address as bound into its cookie (whitepaper 5.4.7: IP address and UDP port)."""
    host, port = source
    return ipaddress.ip_address(host).packed + port.to_bytes(2, "big")


class CookieChecker:
    """Our side of the macs: validates incoming handshake messages and issues cookies under load."""

    def __init__(self, local_public_key: bytes, rng: Callable[[int], bytes]) -> None:
        self._mac1_key = crypto.hash_(constants.LABEL_MAC1, local_public_key)
        self._cookie_key = crypto.hash_(constants.LABEL_COOKIE, local_public_key)
        self._rng = rng
        self._secret = b""
        self._secret_set_at: float | None = None

    def check_mac1(self, message: bytes) -> bool:
        mac1_offset = len(message) - _MACS_SIZE
        expected = crypto.mac(self._mac1_key, message[:mac1_offset])
        return hmac.compare_digest(expected, message[mac1_offset : mac1_offset + constants.MAC_SIZE])

    def check_mac2(self, message: bytes, source: Endpoint, now: float) -> bool:
        """True when mac2 carries the cookie we currently issue to `source` (an expired secret fails everyone)."""
        if self._secret_set_at is None or now - self._secret_set_at > constants.COOKIE_REFRESH_TIME:
            return False
        cookie = crypto.mac(self._secret, _source_bytes(source))
        mac2_offset = len(message) - constants.MAC_SIZE
        return hmac.compare_digest(crypto.mac(cookie, message[:mac2_offset]), message[mac2_offset:])

    def create_reply(self, message: bytes, receiver: int, source: Endpoint, now: float) -> CookieReply:
        """Cookie reply to the handshake `message` from `source`, bound to that message's mac1."""
        if self._secret_set_at is None or now - self._secret_set_at > constants.COOKIE_REFRESH_TIME:
            self._secret = self._rng(constants.KEY_SIZE)
            self._secret_set_at = now
        cookie = crypto.mac(self._secret, _source_bytes(source))
        nonce = self._rng(constants.COOKIE_NONCE_SIZE)
        mac1_offset = len(message) - _MACS_SIZE
        mac1 = message[mac1_offset : mac1_offset + constants.MAC_SIZE]
        return CookieReply(receiver, nonce, crypto.xaead_encrypt(self._cookie_key, nonce, cookie, mac1))


class CookieGenerator:
    """The macs of our handshake messages to one peer, and the cookie that peer last gave us."""

    def __init__(self, remote_public_key: bytes) -> None:
        self._mac1_key = crypto.hash_(constants.LABEL_MAC1, remote_public_key)
        self._cookie_key = crypto.hash_(constants.LABEL_COOKIE, remote_public_key)
        self._cookie = b""
        self._cookie_set_at: float | None = None
        self._last_mac1: bytes | None = None

    def seal(self, message: bytes, now: float) -> bytes:
        """`message` (a packed handshake message whose mac fields are placeholders) with mac1 and mac2 filled in."""
        body = message[: len(message) - _MACS_SIZE]
        mac1 = crypto.mac(self._mac1_key, body)
        self._last_mac1 = mac1
        if self._cookie_set_at is None or now - self._cookie_set_at >= constants.COOKIE_REFRESH_TIME:
            mac2 = _NO_MAC
        else:
            mac2 = crypto.mac(self._cookie, body + mac1)
        return body + mac1 + mac2

    def consume_reply(self, reply: CookieReply, now: float) -> None:
        if self._last_mac1 is None:
            raise CookieError(DropReason.UNEXPECTED_MESSAGE, "cookie reply but we sent no handshake message")
        try:
            cookie = crypto.xaead_decrypt(self._cookie_key, reply.nonce, reply.encrypted_cookie, self._last_mac1)
        except crypto.AuthenticationError as error:
            raise CookieError(DropReason.DECRYPT_FAILED, f"cookie reply: {error}") from None
        self._cookie = cookie
        self._cookie_set_at = now
