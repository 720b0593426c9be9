"""Tests of the event bus: fan-out, overflow accounting and clean unsubscription."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioshop.runtime import open_event_bus


async def test_fan_out_to_every_subscriber() -> None:
    """Each subscriber of a topic receives every event published on it, in order."""
    with open_event_bus() as bus:
        first = bus.subscribe("shop", "order.checkout", name="a")
        second = bus.subscribe("shop", "order.checkout", name="b")
        other = bus.subscribe("shop", "other", name="c")
        bus.publish("shop", "order.checkout", "/orders/u1", {"n": 1})
        bus.publish("shop", "order.checkout", "/orders/u2", {"n": 2})
        for subscription in (first, second):
            events = [await subscription.receive(), await subscription.receive()]
            assert [e.data["n"] for e in events] == [1, 2]
            assert events[0].path == "/orders/u1"
        assert other.backlog == 0


async def test_slow_subscriber_does_not_block_publisher() -> None:
    """A full subscriber channel drops and counts its overflow; others still get the event."""
    with open_event_bus() as bus:
        slow = bus.subscribe("shop", "order.checkout", name="slow", capacity=1)
        fast = bus.subscribe("shop", "order.checkout", name="fast", capacity=10)
        for n in range(3):
            bus.publish("shop", "order.checkout", "/p", n)  # never awaits, never blocks
        assert slow.overflowed == 2
        assert slow.delivered == 1
        assert fast.backlog == 3
        assert bus.overflowed == 2


async def test_a_doorbell_holds_one_event_and_never_overflows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A doorbell subscription keeps one event however many are published, counts no
    overflow and logs nothing: one waiting event already says "look again"."""
    with open_event_bus() as bus:
        bell = bus.subscribe("shop", "order.checkout", name="delivery", doorbell=True)
        for n in range(5000):
            bus.publish("shop", "order.checkout", "/p", n)
        assert bell.backlog == 1
        assert (await bell.receive()).data == 0
        assert bell.overflowed == 0 and bus.overflowed == 0
        assert [r for r in caplog.records if r.name == "trioshop.bus"] == []


async def test_closed_subscription_ends_iteration_and_stops_delivery() -> None:
    """Closing a subscription ends its iteration after the backlog and removes it from the bus."""
    with open_event_bus() as bus:
        subscription = bus.subscribe("shop", "k", name="s")
        bus.publish("shop", "k", "/p", 1)
        subscription.close()
        bus.publish("shop", "k", "/p", 2)
        assert [event.data async for event in subscription] == [1]
        assert bus.subscriptions() == []


async def test_bus_close_ends_subscribers() -> None:
    """Leaving the bus block ends every subscriber's stream."""
    received: list[int] = []
    async with trio.open_nursery() as nursery:
        with open_event_bus() as bus:
            subscription = bus.subscribe("shop", "k", name="s")

            async def consume() -> None:
                async for event in subscription:
                    received.append(event.data)

            nursery.start_soon(consume)
            bus.publish("shop", "k", "/p", 7)
            await trio.testing.wait_all_tasks_blocked()
    assert received == [7]
