"""The lab's one waiting helper: returns the first truthy value, fails naming what it waited for."""

from __future__ import annotations

import itertools

import pytest
import trio

from tests.lab.wait import WaitTimeout, wait_until, wait_until_async


def test_returns_the_first_truthy_value() -> None:
    answers = iter([0, "", "ready"])
    assert wait_until(lambda: next(answers), timeout=5, what="readiness", interval=0) == "ready"


def test_times_out_naming_what_it_waited_for_and_the_last_value() -> None:
    counter = itertools.count()
    with pytest.raises(WaitTimeout, match=r"waiting for the route \(last seen: False\)"):
        wait_until(lambda: next(counter) < 0, timeout=0.05, what="the route", interval=0.01)


async def test_async_variant_waits_on_the_trio_clock(autojump_clock: trio.abc.Clock) -> None:
    calls = 0

    async def ready() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    assert await wait_until_async(ready, timeout=10, what="three tries", interval=1) is True
    with pytest.raises(WaitTimeout, match="never"):
        await wait_until_async(_never, timeout=2, what="never", interval=1)


async def _never() -> bool:
    return False
