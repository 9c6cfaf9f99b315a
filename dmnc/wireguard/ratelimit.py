"""Per-source token bucket for handshake messages under load (wireguard-go ratelimiter/ratelimiter.go)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from dmnc.wireguard import constants

_COST: Final = 1.0 / constants.RATELIMIT_PACKETS_PER_SECOND  # seconds of credit one message costs
_MAX_TOKENS: Final = _COST * constants.RATELIMIT_BURST


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last_seen: float


class RateLimiter:
    """Allows RATELIMIT_PACKETS_PER_SECOND messages per source IP with a burst of RATELIMIT_BURST.

    Keyed by IP address only (not port), like wireguard-go, so one host cannot multiply its budget with ports.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._last_sweep = float("-inf")

    def allow(self, source_ip: str, now: float) -> bool:
        self._sweep(now)
        bucket = self._buckets.get(source_ip)
        if bucket is None:
            self._buckets[source_ip] = _Bucket(_MAX_TOKENS - _COST, now)
            return True
        bucket.tokens = min(_MAX_TOKENS, bucket.tokens + (now - bucket.last_seen))
        bucket.last_seen = now
        if bucket.tokens >= _COST:
            bucket.tokens -= _COST
            return True
        return False

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: float) -> None:
        """Forget sources idle for RATELIMIT_GARBAGE_AFTER (they would be back at a full bucket anyway)."""
        if now - self._last_sweep < constants.RATELIMIT_GARBAGE_AFTER:
            return
        self._last_sweep = now
        stale = [
            ip for ip, bucket in self._buckets.items() if now - bucket.last_seen > constants.RATELIMIT_GARBAGE_AFTER
        ]
        for ip in stale:
            del self._buckets[ip]
