"""Handshake rate limiting per source under load: burst 5, then 20 per second (wireguard-go ratelimiter)."""

from __future__ import annotations

from dmnc.wireguard.ratelimit import RateLimiter


def test_burst_of_five_then_limited() -> None:
    limiter = RateLimiter()
    assert [limiter.allow("192.0.2.1", 0.0) for _ in range(6)] == [True] * 5 + [False]


def test_tokens_refill_at_twenty_per_second() -> None:
    limiter = RateLimiter()
    for _ in range(5):
        limiter.allow("192.0.2.1", 0.0)
    assert not limiter.allow("192.0.2.1", 0.01)
    assert limiter.allow("192.0.2.1", 0.06)  # 50 ms buys one message
    assert not limiter.allow("192.0.2.1", 0.07)


def test_sources_are_independent() -> None:
    limiter = RateLimiter()
    for _ in range(5):
        limiter.allow("192.0.2.1", 0.0)
    assert not limiter.allow("192.0.2.1", 0.0)
    assert limiter.allow("2001:db8::1", 0.0)


def test_idle_sources_are_forgotten() -> None:
    limiter = RateLimiter()
    for index in range(100):
        limiter.allow(f"10.0.0.{index}", 0.0)
    assert len(limiter) == 100
    limiter.allow("192.0.2.1", 5.0)
    assert len(limiter) == 1
