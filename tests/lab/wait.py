"""Waiting for a condition in lab tests, the one way: poll until true or fail saying what was awaited.

Lab tests never sleep and hope. A test that needs the world to reach a state polls for that state with a deadline
generous enough for a loaded 2-core machine; on timeout the failure names what it waited for (and the last value
seen, when the condition returns one), so a slow machine and a broken feature read differently.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

_T = TypeVar("_T")

DEFAULT_INTERVAL_S = 0.05


class WaitTimeout(AssertionError):
    """The awaited condition did not become true in time."""


def wait_until(condition: Callable[[], _T], timeout: float, what: str, *, interval: float = DEFAULT_INTERVAL_S) -> _T:
    """Call `condition` until it returns a truthy value, and return that value; raise WaitTimeout after `timeout`
    seconds naming `what`. The condition is always tried at least once, and once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what} (last seen: {value!r})")
        time.sleep(min(interval, remaining))


async def wait_until_async(
    condition: Callable[[], Awaitable[_T]], timeout: float, what: str, *, interval: float = DEFAULT_INTERVAL_S
) -> _T:
    """`wait_until` for trio tests: `condition` is awaited; the wait yields to other tasks between tries."""
    deadline = trio.current_time() + timeout
    while True:
        value = await condition()
        if value:
            return value
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what} (last seen: {value!r})")
        await trio.sleep(min(interval, remaining))
