"""The event bus: publish once, fan out to every subscriber's own bounded channel."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import trio

from trioshop.logs import log_event

logger = logging.getLogger("trioshop.bus")


@attrs.frozen(kw_only=True)
class Event:
    """One published event: where it belongs (``system``, ``kind``, ``path``) and its data."""

    id: int
    system: str
    kind: str
    path: str
    data: Any
    published_at: float


@attrs.frozen(kw_only=True)
class SubscriberStatistics:
    """One subscriber's totals: events delivered to it, dropped for it, waiting in it."""

    name: str
    delivered: int
    overflowed: int
    backlog: int


@attrs.frozen(kw_only=True)
class BusStatistics:
    """A snapshot of the bus: events published, and each current subscriber's totals."""

    published: int
    subscribers: tuple[SubscriberStatistics, ...]


@attrs.define(eq=False, kw_only=True)
class Subscription:
    """One subscriber's bounded channel of events; iterate it with ``async for``.

    Close it (or leave its ``with`` block) to unsubscribe: the bus stops delivering to it at
    once and iteration ends after the events already buffered.

    A ``doorbell`` subscription holds at most one event: its subscriber reads the truth
    elsewhere (the outbox) and an event only says "look again", so one waiting already says
    it all, and a publish that finds it waiting drops the new event silently (not an overflow).
    """

    name: str
    topic: tuple[str, str]
    doorbell: bool = False
    _send: trio.MemorySendChannel[Event] = attrs.field(repr=False)
    _receive: trio.MemoryReceiveChannel[Event] = attrs.field(repr=False)
    _bus: EventBus = attrs.field(repr=False)
    delivered: int = 0
    overflowed: int = 0

    async def receive(self) -> Event:
        """The next event; raises :class:`trio.EndOfChannel` once closed and drained."""
        return await self._receive.receive()

    def receive_nowait(self) -> Event:
        """The next buffered event; raises :class:`trio.WouldBlock` if there is none."""
        return self._receive.receive_nowait()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._receive.__aiter__()

    @property
    def backlog(self) -> int:
        return self._receive.statistics().current_buffer_used

    def close(self) -> None:
        self._bus._unsubscribe(self)
        self._send.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@attrs.define
class EventBus:
    """Fans every published event out to the subscribers of its ``(system, kind)``.

    ``publish`` never blocks and never fails because of a subscriber: a full subscriber
    channel drops that event for that subscriber only, counted in ``overflowed`` and logged.
    """

    capacity: int = 1024
    published: int = 0
    _topics: dict[tuple[str, str], list[Subscription]] = attrs.field(factory=dict)
    _ids: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))

    def subscribe(
        self, system: str, kind: str, *, name: str, capacity: int | None = None,
        doorbell: bool = False,
    ) -> Subscription:
        """A new subscription to ``(system, kind)`` with its own channel of *capacity* events
        (one, for a *doorbell*: see :class:`Subscription`)."""
        size = 1 if doorbell else capacity or self.capacity
        send, receive = trio.open_memory_channel[Event](size)
        subscription = Subscription(
            name=name, topic=(system, kind), doorbell=doorbell, send=send, receive=receive,
            bus=self,
        )
        self._topics.setdefault((system, kind), []).append(subscription)
        return subscription

    def subscriptions(self) -> list[Subscription]:
        return [s for subscribers in self._topics.values() for s in subscribers]

    def statistics(self) -> BusStatistics:
        """Events published since the bus opened, and each current subscriber's totals."""
        return BusStatistics(
            published=self.published,
            subscribers=tuple(
                SubscriberStatistics(
                    name=s.name, delivered=s.delivered, overflowed=s.overflowed,
                    backlog=s.backlog,
                )
                for s in self.subscriptions()
            ),
        )

    def publish(self, system: str, kind: str, path: str, data: Any) -> Event:
        """Deliver an event to every current subscriber of ``(system, kind)`` and return it."""
        event = Event(
            id=next(self._ids), system=system, kind=kind, path=path, data=data,
            published_at=time.time(),
        )
        self.published += 1
        for subscription in list(self._topics.get((system, kind), ())):
            try:
                subscription._send.send_nowait(event)
            except trio.WouldBlock:
                if subscription.doorbell:  # already rung: the subscriber will look anyway
                    continue
                subscription.overflowed += 1
                log_event(
                    logger,
                    "event dropped: subscriber channel full",
                    logging.WARNING,
                    subscriber=subscription.name,
                    system=system,
                    kind=kind,
                    path=path,
                    overflowed=subscription.overflowed,
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._unsubscribe(subscription)
            else:
                subscription.delivered += 1
        return event

    @property
    def overflowed(self) -> int:
        return sum(s.overflowed for s in self.subscriptions())

    def _unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._topics.get(subscription.topic, [])
        if subscription in subscribers:
            subscribers.remove(subscription)

    def close(self) -> None:
        """Close every subscription: subscribers see the end of their stream after the backlog."""
        for subscription in self.subscriptions():
            subscription.close()


@contextmanager
def open_event_bus(capacity: int = 1024) -> Iterator[EventBus]:
    """An :class:`EventBus` whose subscriptions are all closed when the block exits."""
    bus = EventBus(capacity)
    try:
        yield bus
    finally:
        bus.close()
