"""The shop's supervised services: what each one gets, the outbox loop that feeds it orders,
and starting and stopping them under the supervisor."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio
from opentelemetry import trace

from trioshop import events
from trioshop.config import Settings
from trioshop.domain import Order
from trioshop.logs import log_event
from trioshop.registry import ServiceDefinition, resolve_callable
from trioshop.runtime import EventBus, ServiceState, Subscription, Supervisor
from trioshop.shop.cart_actor import ORDER_KIND, ORDER_SYSTEM
from trioshop.store import Store, StoreError
from trioshop.telemetry import links_to

logger = logging.getLogger("trioshop.services")

# Handles one order and returns the status to record, e.g. "dispatched".
OrderHandler = Callable[["ServiceContext", Order], Awaitable[str]]

# A service whose store does not answer (a database restart) waits this long, then looks
# again: an outage is not the service's crash, and must not use up its restarts.
STORE_RETRY_SECONDS = 1.0


@attrs.define
class ServiceContext:
    """Outlives restarts of its service: the store keeps its cursor, ``events`` its doorbell.

    Orders come from the store's outbox, not from the bus: an event only says "new orders
    may be waiting", so an event missed while the service was down loses nothing.
    ``settings`` are the node's run settings, read by a service that needs its own (the
    relay's Redis URL, stream and length).
    """

    name: str
    store: Store
    events: Subscription
    settings: Settings
    processed: int = 0


async def _wait_for_news(ctx: ServiceContext) -> None:
    """Until new orders may be waiting: a local checkout's event, another node's wake-up or
    the store's poll interval, whichever comes first. On an exclusive store the last two
    never come (no other process writes its outbox: it never polls, see
    ``Store.outbox_poll_seconds``), so only the event is waited for: no task started."""
    poll = ctx.store.outbox_poll_seconds
    if math.isinf(poll):
        await ctx.events.receive()
    else:
        with trio.move_on_after(poll):
            async with trio.open_nursery() as nursery:

                async def first(wait: Callable[[], Awaitable[object]]) -> None:
                    await wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(first, ctx.events.receive)
                nursery.start_soon(first, ctx.store.wait_for_outbox)
    while True:  # one look at the outbox serves every event that came meanwhile
        try:
            ctx.events.receive_nowait()
        except trio.WouldBlock:
            return


async def _store_trouble(ctx: ServiceContext, error: StoreError) -> None:
    log_event(
        logger, "service waiting for the store", logging.WARNING, service=ctx.name,
        error=str(error), retry_in=STORE_RETRY_SECONDS,
    )
    await trio.sleep(STORE_RETRY_SECONDS)


async def consume_orders(
    ctx: ServiceContext, handle: OrderHandler, *, task_status: trio.TaskStatus[None]
) -> None:
    """Run *handle* once per outbox order this service has not acknowledged, in order.

    Ready as soon as it listens. At least once: an order is acknowledged (cursor advanced,
    status recorded) only after *handle* returned, so a crash or a restart redelivers it.
    A crash in *handle* propagates for the supervisor to restart the service; a store that
    does not answer is waited for (every ``STORE_RETRY_SECONDS``), not a crash.

    Each order is handled in a span ``service <name>`` of a trace of its own, linked to the
    checkout that placed it (the outbox entry's ``trace_parent``): a link, not a parent, as the
    handling may come long after that request ended, or on another node.
    """
    tracer = trace.get_tracer(__name__)
    task_status.started()
    while True:
        try:
            entries = await ctx.store.pending(ctx.name, ctx.store.outbox_batch)
        except StoreError as exc:
            await _store_trouble(ctx, exc)
            continue
        if not entries:
            await _wait_for_news(ctx)
            continue
        for entry in entries:
            with tracer.start_as_current_span(
                f"service {ctx.name}", links=links_to(entry.trace_parent),
                attributes={
                    "trioshop.service": ctx.name, "trioshop.order.id": entry.order.order_id,
                },
            ) as span:
                status = await handle(ctx, entry.order)
                span.set_attribute("trioshop.order.status", status)
            try:
                await ctx.store.ack(ctx.name, entry, status)
            except StoreError as exc:  # handled, not recorded: it comes again (at least once)
                await _store_trouble(ctx, exc)
                break
            ctx.processed += 1
            log_event(
                logger, events.ORDER_HANDLED, service=ctx.name, order_id=entry.order.order_id,
                status=status, seq=entry.seq,
            )


@attrs.frozen
class ServiceStatistics:
    """One running service: the supervisor's view of it and the orders it handled."""

    state: ServiceState
    processed: int


@attrs.define
class Services:
    """The shop's running services, each supervised with its own doorbell subscription.

    A service whose registry entry is ``enabled_by`` a setting these *settings* leave off
    (the relay without ``events_redis``) is neither started nor registered in the store, so
    no orders are queued for it.
    """

    _supervisor: Supervisor
    _bus: EventBus
    _store: Store
    _settings: Settings
    _running: dict[str, ServiceContext] = attrs.field(factory=dict)

    async def start(self, entry: ServiceDefinition) -> None:
        """Supervise the service *entry*; returns once it is ready or its first try failed.
        A service its setting leaves off is skipped (logged)."""
        if not entry.enabled(self._settings):
            log_event(logger, "service off", service=entry.name, enabled_by=entry.enabled_by)
            return
        target = resolve_callable(entry.process)
        system, kind = entry.subscribe or (ORDER_SYSTEM, ORDER_KIND)
        await self._store.register_service(entry.name)
        events = self._bus.subscribe(system, kind, name=entry.name)
        ctx = ServiceContext(entry.name, self._store, events, self._settings)
        self._running[entry.name] = ctx
        await self._supervisor.start(entry.name, target, entry.restart, ctx)

    async def start_all(self, entries: Sequence[ServiceDefinition]) -> None:
        """Start every service of *entries* (as :meth:`start`), then unregister from the
        store the services it still knew that *entries* lack (removed while the node was
        down) or that this node's settings leave off: added back later, they start from the
        next order, as after a reload. Every node of one store is given the same settings
        (the cluster passes its options to each), or they would unregister each other's."""
        for entry in entries:
            await self.start(entry)
        gone = await self._store.keep_services(
            [entry.name for entry in entries if entry.enabled(self._settings)]
        )
        if gone:
            log_event(logger, "services unregistered", services=",".join(gone),
                      reason="no longer in the registry or off")

    async def stop(self, name: str) -> None:
        """Stop the service *name* and drop its subscription (its outbox cursor stays: a
        restart goes on from where it was); nothing to do for a service that is off."""
        if name not in self._running:
            return
        await self._supervisor.stop(name)
        self._running.pop(name).events.close()

    async def remove(self, name: str) -> None:
        """Stop the service *name* for good (a reload removed it): no order is queued for it
        any more, and added again it starts from the next order (``unregister_service``).

        Unregistered once stopped: an order it acknowledges while stopping would otherwise
        bring its cursor back. Raises ``StoreError`` if the store does not answer.
        """
        await self.stop(name)
        await self._store.unregister_service(name)

    @property
    def names(self) -> list[str]:
        """The running services' names, in start order."""
        return list(self._running)

    @property
    def failed(self) -> list[str]:
        """Names of the services the supervisor gave up on."""
        return self._supervisor.failed

    def statistics(self) -> list[ServiceStatistics]:
        """Each service's supervisor state and the orders it handled, in start order."""
        return [
            ServiceStatistics(state, self._running[state.name].processed)
            for state in self._supervisor.statistics()
            if state.name in self._running
        ]
