"""The jittered exponential backoff: the schedule it promises, whatever the jitter draws."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dmnc.supervisor.backoff import Backoff


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    backoff = Backoff(0.25, 5.0, rng=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    low = Backoff(0.25, 5.0, rng=lambda: 0.0)
    assert [low.next_delay() for _ in range(3)] == [0.125, 0.25, 0.5]


def test_backoff_reset_starts_over() -> None:
    backoff = Backoff(1.0, 8.0, rng=lambda: 1.0)
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0


@settings(deadline=None)
@given(
    initial=st.floats(0.01, 100.0),
    factor=st.floats(1.0, 1000.0),
    draws=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30),
)
def test_every_delay_is_within_half_to_all_of_the_capped_doubling_schedule(
    initial: float, factor: float, draws: list[float]
) -> None:
    maximum = initial * factor
    values = iter(draws)
    backoff = Backoff(initial, maximum, rng=lambda: next(values))
    for attempt in range(len(draws)):
        scheduled = min(maximum, initial * 2.0**attempt)
        assert scheduled / 2 <= backoff.next_delay() <= scheduled
