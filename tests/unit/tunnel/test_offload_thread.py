"""The offload thread's hand-off: order, the inline path for small batches, the bound, errors raised in trio."""

from __future__ import annotations

import queue
import threading

import pytest
import trio

from dmnc.tun import TunError
from dmnc.tunnel.datapath import MAX_PENDING_BATCHES, OffloadThread
from tests.lab.wait import wait_until

WAIT_S = 10.0


class Recorder:
    def __init__(self) -> None:
        self.handled: list[tuple[int, str]] = []
        self.lost: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def handle(self, batch: int) -> None:
        self.entered.set()
        self.release.wait(WAIT_S)
        if batch < 0:
            raise TunError("writing to tun0: Input/output error")
        self.handled.append((batch, threading.current_thread().name))

    def overflow(self, batch: int) -> None:
        self.lost.append(batch)


async def test_batches_are_handled_in_order_in_the_thread_and_small_ones_inline_when_idle() -> None:
    recorder = Recorder()
    offload = OffloadThread("offload-test", recorder.handle, recorder.overflow, trio.lowlevel.current_trio_token())
    offload.start()
    try:
        offload.submit(1, small=True)  # idle: handled right here
        assert recorder.handled == [(1, threading.current_thread().name)]
        for batch in range(2, 6):
            offload.submit(batch)
        wait_until(lambda: len(recorder.handled) == 5, WAIT_S, "the queued batches")
        assert [batch for batch, _ in recorder.handled] == [1, 2, 3, 4, 5]
        assert {thread for _, thread in recorder.handled[1:]} == {"offload-test"}
    finally:
        offload.stop()


async def test_a_busy_thread_queues_small_batches_too_and_drops_past_the_bound() -> None:
    recorder = Recorder()
    recorder.release.clear()
    offload = OffloadThread("offload-test", recorder.handle, recorder.overflow, trio.lowlevel.current_trio_token())
    offload.start()
    try:
        offload.submit(0)
        assert recorder.entered.wait(WAIT_S)  # the thread holds batch 0
        for batch in range(1, MAX_PENDING_BATCHES + 3):
            offload.submit(batch, small=True)  # busy: queued behind it, never inline out of order
        assert recorder.lost == [MAX_PENDING_BATCHES + 1, MAX_PENDING_BATCHES + 2]
        recorder.release.set()
        wait_until(lambda: len(recorder.handled) == MAX_PENDING_BATCHES + 1, WAIT_S, "the queued batches")
        assert [batch for batch, _ in recorder.handled] == list(range(MAX_PENDING_BATCHES + 1))
    finally:
        recorder.release.set()
        offload.stop()


class GatedQueue(queue.SimpleQueue[int | None]):
    """Holds the thread just after it took a batch, before it handles it: the moment a flag set after `get()` missed."""

    def __init__(self) -> None:
        super().__init__()
        self.took = threading.Event()
        self.gate = threading.Event()

    def get(self, block: bool = True, timeout: float | None = None) -> int | None:
        batch = super().get(block, timeout)
        if batch is not None:
            self.took.set()
            self.gate.wait(WAIT_S)
        return batch


async def test_a_small_batch_never_runs_inline_while_the_thread_holds_one_it_has_just_taken() -> None:
    recorder = Recorder()
    offload = OffloadThread("offload-test", recorder.handle, recorder.overflow, trio.lowlevel.current_trio_token())
    gated = GatedQueue()
    offload._queue = gated  # the test holds the thread between taking and handling a batch
    offload.start()
    try:
        offload.submit(0)
        assert gated.took.wait(WAIT_S)  # the queue is empty again, and the thread has not begun batch 0
        offload.submit(1, small=True)
        gated.gate.set()
        wait_until(lambda: len(recorder.handled) == 2, WAIT_S, "both batches")
        assert recorder.handled == [(0, "offload-test"), (1, "offload-test")]
    finally:
        gated.gate.set()
        offload.stop()


async def test_an_error_in_the_thread_is_raised_by_watch() -> None:
    recorder = Recorder()
    offload = OffloadThread("offload-test", recorder.handle, recorder.overflow, trio.lowlevel.current_trio_token())
    offload.start()
    try:
        offload.submit(-1)
        with pytest.raises(TunError, match="tun0"), trio.fail_after(WAIT_S):
            await offload.watch()
    finally:
        offload.stop()
