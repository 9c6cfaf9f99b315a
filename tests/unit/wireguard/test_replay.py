"""Replay window: the sequence of the Linux kernel's drivers/net/wireguard/selftest/counter.c, case by case."""

from __future__ import annotations

import pytest

from dmnc.wireguard.constants import REJECT_AFTER_MESSAGES
from dmnc.wireguard.replay import WINDOW_SIZE, ReplayWindow

T_LIM = WINDOW_SIZE + 1

KERNEL_SEQUENCE = [
    (0, True),
    (1, True),
    (1, False),
    (9, True),
    (8, True),
    (7, True),
    (7, False),
    (T_LIM, True),
    (T_LIM - 1, True),
    (T_LIM - 1, False),
    (T_LIM - 2, True),
    (2, True),
    (2, False),
    (T_LIM + 16, True),
    (3, False),
    (T_LIM + 16, False),
    (T_LIM * 4, True),
    (T_LIM * 4 - (T_LIM - 1), True),
    (10, False),
    (T_LIM * 4 - T_LIM, False),
    (T_LIM * 4 - (T_LIM + 1), False),
    (T_LIM * 4 - (T_LIM - 2), True),
    (T_LIM * 4 + 1 - T_LIM, False),
    (0, False),
    (REJECT_AFTER_MESSAGES, False),
    (REJECT_AFTER_MESSAGES - 1, True),
    (REJECT_AFTER_MESSAGES, False),
    (REJECT_AFTER_MESSAGES - 1, False),
    (REJECT_AFTER_MESSAGES - 2, True),
    (REJECT_AFTER_MESSAGES + 1, False),
    (REJECT_AFTER_MESSAGES + 2, False),
    (REJECT_AFTER_MESSAGES - 2, False),
    (REJECT_AFTER_MESSAGES - 3, True),
    (0, False),
]


def test_window_is_2048_bits_minus_one_block() -> None:
    assert WINDOW_SIZE == 2048 - 64


def test_kernel_selftest_sequence() -> None:
    window = ReplayWindow(REJECT_AFTER_MESSAGES)
    for step, (counter, expected) in enumerate(KERNEL_SEQUENCE, start=1):
        assert window.accept(counter) is expected, f"kernel counter.c case {step}: T({counter}, {expected})"


def test_whole_window_in_order_then_zero_still_fits() -> None:
    window = ReplayWindow(REJECT_AFTER_MESSAGES)
    for counter in range(1, WINDOW_SIZE + 1):
        assert window.accept(counter)
    assert window.accept(0)
    assert not window.accept(0)


def test_window_plus_one_pushes_zero_out_but_not_one() -> None:
    window = ReplayWindow(REJECT_AFTER_MESSAGES)
    for counter in range(2, WINDOW_SIZE + 2):
        assert window.accept(counter)
    assert window.accept(1)
    assert not window.accept(0)


def test_whole_window_in_reverse_order() -> None:
    window = ReplayWindow(REJECT_AFTER_MESSAGES)
    for counter in range(WINDOW_SIZE, -1, -1):
        assert window.accept(counter)


@pytest.mark.parametrize("zero_first", [True, False])
def test_reverse_window_edges(zero_first: bool) -> None:
    # counter.c: fill WINDOW_SIZE + 1 .. 2 in reverse, then 0 is out; or fill WINDOW_SIZE .. 1 and probe both ends.
    window = ReplayWindow(REJECT_AFTER_MESSAGES)
    for counter in range(WINDOW_SIZE + 1, 0, -1):
        assert window.accept(counter)
    assert not window.accept(0)

    window = ReplayWindow(REJECT_AFTER_MESSAGES)
    for counter in range(WINDOW_SIZE, 0, -1):
        assert window.accept(counter)
    if zero_first:
        assert window.accept(0)
        assert window.accept(WINDOW_SIZE + 1)
    else:
        assert window.accept(WINDOW_SIZE + 1)
        assert not window.accept(0)


def test_jump_far_ahead_clears_every_block() -> None:
    window = ReplayWindow(REJECT_AFTER_MESSAGES)
    for counter in range(200):
        assert window.accept(counter)
    far = 10 * WINDOW_SIZE + 5
    assert window.accept(far)
    # Counters just behind the jump are new, even where their ring slots once held old bits.
    for counter in range(far - WINDOW_SIZE, far):
        assert window.accept(counter), counter
    assert not window.accept(far - WINDOW_SIZE - 1)
