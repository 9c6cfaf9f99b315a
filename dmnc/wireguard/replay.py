"""Sliding replay window of transport counters (whitepaper 5.4.6), RFC 6479 style as in the Linux kernel's
drivers/net/wireguard/receive.c counter_validate(): a ring of 64-bit blocks, whole blocks cleared as the window
advances, so each check is O(1) however far the counter jumps.
"""

from __future__ import annotations

from typing import Final

_BITS_PER_BLOCK: Final = 64
_BLOCK_SHIFT: Final = 6
# RFC 6479 leaves the window size to the implementation; 2048 bits accept packets reordered by up to ~2000.
WINDOW_BITS_TOTAL: Final = 2048
_RING_BLOCKS: Final = WINDOW_BITS_TOTAL // _BITS_PER_BLOCK
_RING_MASK: Final = _RING_BLOCKS - 1
# One block is always being recycled, so the usable window is one block short of the ring (kernel
# COUNTER_WINDOW_SIZE = COUNTER_BITS_TOTAL - COUNTER_REDUNDANT_BITS).
WINDOW_SIZE: Final = WINDOW_BITS_TOTAL - _BITS_PER_BLOCK


class ReplayWindow:
    """Accepts each counter at most once, and none that fell behind the window or reached the message limit."""

    __slots__ = ("_blocks", "_greatest", "_reject_after_messages")

    def __init__(self, reject_after_messages: int) -> None:
        self._reject_after_messages = reject_after_messages
        # Counters are stored plus one, so "nothing seen" is 0 and counter 0 is a normal value.
        self._greatest = 0
        self._blocks = [0] * _RING_BLOCKS

    def accept(self, counter: int) -> bool:
        """Record `counter` and return True if it is new and inside the window; False (no change) otherwise."""
        if counter >= self._reject_after_messages or self._greatest > self._reject_after_messages:
            return False
        counter += 1
        greatest = self._greatest
        if counter > greatest:
            block = counter >> _BLOCK_SHIFT
            current_block = greatest >> _BLOCK_SHIFT
            if block != current_block:
                # Blocks the window slides over are recycled; a jump past the whole ring clears each block once.
                blocks = self._blocks
                for skipped in range(current_block + 1, min(block, current_block + _RING_BLOCKS) + 1):
                    blocks[skipped & _RING_MASK] = 0
            self._greatest = counter
        elif counter + WINDOW_SIZE < greatest:
            return False
        index = (counter >> _BLOCK_SHIFT) & _RING_MASK
        bit = 1 << (counter & (_BITS_PER_BLOCK - 1))
        word = self._blocks[index]
        if word & bit:
            return False
        self._blocks[index] = word | bit
        return True
