"""The event fan-out of the control socket, without any socket."""

from __future__ import annotations

import time

import pytest

from dmnc.control import EventBroadcaster
from dmnc.control.messages import StatusEvent


def event(number: int) -> StatusEvent:
    return StatusEvent(float(number), "test.event", f"event {number}")


async def test_every_subscriber_gets_every_event_in_order() -> None:
    broadcaster = EventBroadcaster()
    with broadcaster.subscribe() as first, broadcaster.subscribe() as second:
        assert broadcaster.subscriber_count == 2
        for number in range(3):
            broadcaster.publish(event(number))
        for subscription in (first, second):
            assert [subscription.receive.receive_nowait().message for _ in range(3)] == [
                "event 0",
                "event 1",
                "event 2",
            ]
    assert broadcaster.subscriber_count == 0


async def test_publishing_without_subscribers_is_a_no_op() -> None:
    EventBroadcaster().publish(event(1))


async def test_lagging_subscriber_is_cut_off_after_its_buffer_without_blocking_the_publisher() -> None:
    broadcaster = EventBroadcaster(buffer_size=2)
    with broadcaster.subscribe() as slow, broadcaster.subscribe() as fast:
        for number in range(2):
            broadcaster.publish(event(number))
        assert fast.receive.receive_nowait().message == "event 0"
        assert fast.receive.receive_nowait().message == "event 1"
        broadcaster.publish(event(2))
        assert slow.overflowed
        assert not fast.overflowed
        assert broadcaster.subscriber_count == 1
        assert [item.message async for item in slow.receive] == ["event 0", "event 1"]
        assert fast.receive.receive_nowait().message == "event 2"


async def test_emit_stamps_the_current_time() -> None:
    broadcaster = EventBroadcaster()
    with broadcaster.subscribe() as subscription:
        before = time.time()
        emitted = broadcaster.emit("docker.connected", "connected", api_version="1.41")
        after = time.time()
        received = subscription.receive.receive_nowait()
    assert received == emitted
    assert received.details == {"api_version": "1.41"}
    assert before <= received.time <= after


async def test_emit_rejects_a_badly_named_kind() -> None:
    with pytest.raises(ValueError, match="area"):
        EventBroadcaster().emit("Connected", "x")
