"""Query rate limits: one token bucket per source address and one for all sources together.

The DNS server shares its thread with the tunnel's data path, so a query flood must cost a bounded amount of work:
over its limit a query is dropped (and counted) before it is parsed. Pure: `now` (seconds, any monotonic clock) is
an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

# A resolver asks a handful of questions per lookup (A, AAAA, search-list variants); 100/s with a burst of 200 lets
# a build that resolves many names in a burst through, while one source cannot take the global budget alone.
PER_SOURCE_RATE = 100.0
PER_SOURCE_BURST = 200.0
GLOBAL_RATE = 1000.0
GLOBAL_BURST = 2000.0
# Buckets kept at most; beyond that the least recently seen source's bucket is forgotten (it starts full again).
MAX_SOURCES = 1024


@dataclass
class TokenBucket:
    """`rate` tokens per second up to `burst`; each admitted query takes one."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def refill(self, now: float) -> None:
        # A clock that goes backwards (it should not) adds nothing rather than taking tokens away.
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class RateLimits:
    per_source_rate: float = PER_SOURCE_RATE
    per_source_burst: float = PER_SOURCE_BURST
    global_rate: float = GLOBAL_RATE
    global_burst: float = GLOBAL_BURST
    max_sources: int = MAX_SOURCES


class QueryLimiter:
    """Admits a query when both its source's bucket and the global bucket have a token."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        self._limits = limits
        self._global = TokenBucket.full(limits.global_rate, limits.global_burst, now)
        self._sources: dict[str, TokenBucket] = {}
        self.dropped_per_source = 0
        self.dropped_global = 0

    def admit(self, source: str, now: float) -> bool:
        bucket = self._sources.pop(source, None)
        if bucket is None:
            bucket = TokenBucket.full(self._limits.per_source_rate, self._limits.per_source_burst, now)
            if len(self._sources) >= self._limits.max_sources:
                del self._sources[next(iter(self._sources))]
        # Re-inserted on every query: dict order is then least recently seen first, the one to forget.
        self._sources[source] = bucket
        if not bucket.take(now):
            self.dropped_per_source += 1
            return False
        if not self._global.take(now):
            self.dropped_global += 1
            return False
        return True

    @property
    def sources(self) -> int:
        return len(self._sources)
