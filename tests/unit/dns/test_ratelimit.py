"""Token buckets with a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dmnc.dns.ratelimit import QueryLimiter, RateLimits, TokenBucket


def test_a_bucket_admits_its_burst_then_its_rate() -> None:
    bucket = TokenBucket.full(rate=10.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.1)
    assert not bucket.take(0.1)


def test_a_clock_going_backwards_adds_no_tokens() -> None:
    bucket = TokenBucket.full(rate=10.0, burst=1.0, now=5.0)
    assert bucket.take(5.0)
    assert not bucket.take(1.0)
    assert not bucket.take(5.05)
    assert bucket.take(5.2)


def test_one_source_over_its_limit_does_not_starve_another() -> None:
    limiter = QueryLimiter(RateLimits(per_source_rate=1, per_source_burst=5, global_rate=100, global_burst=100), 0.0)
    admitted = sum(limiter.admit("10.0.0.1", 0.0) for _ in range(50))
    assert admitted == 5
    assert limiter.dropped_per_source == 45
    assert limiter.admit("10.0.0.2", 0.0)


def test_the_global_bucket_caps_many_sources() -> None:
    limiter = QueryLimiter(RateLimits(per_source_rate=100, per_source_burst=100, global_rate=1, global_burst=10), 0.0)
    admitted = sum(limiter.admit(f"10.0.0.{index}", 0.0) for index in range(100))
    assert admitted == 10
    assert limiter.dropped_global == 90


def test_the_number_of_buckets_is_bounded() -> None:
    limiter = QueryLimiter(RateLimits(max_sources=8), 0.0)
    for index in range(100):
        limiter.admit(f"source-{index}", float(index))
    assert limiter.sources == 8


@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0, 100, allow_nan=False)), max_size=300))
def test_admitted_queries_never_exceed_burst_plus_rate_times_time(queries: list[tuple[int, float]]) -> None:
    limits = RateLimits(per_source_rate=2, per_source_burst=4, global_rate=5, global_burst=8)
    limiter = QueryLimiter(limits, 0.0)
    now = 0.0
    admitted = 0
    for source, step in queries:
        now += step / 10
        admitted += limiter.admit(str(source), now)
    assert admitted <= limits.global_burst + limits.global_rate * now + 1e-6
