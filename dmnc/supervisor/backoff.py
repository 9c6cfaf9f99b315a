"""Exponential backoff with jitter, for reconnecting to Docker and retrying the VM setup."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays that double from `initial` up to `maximum`, each drawn from [delay/2, delay]; `reset` after a success.

    The jitter keeps several clients from retrying a starting daemon in step; the lower half stays free so that a
    retry never comes sooner than half the schedule promises.
    """

    def __init__(self, initial: float, maximum: float, rng: Callable[[], float] = random.random) -> None:
        self._initial = initial
        self._maximum = maximum
        self._rng = rng
        self._delay = initial

    def reset(self) -> None:
        self._delay = self._initial

    def next_delay(self) -> float:
        delay = self._delay
        self._delay = min(self._maximum, self._delay * 2)
        return delay / 2 + self._rng() * delay / 2
