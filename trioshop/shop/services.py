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
from trioshop.store import OutboxEntry, Store, StoreError
from trioshop.telemetry import links_to

logger = logging.getLogger("trioshop.services")
# The global provider's proxy: it follows an SDK installed later.
_TRACER = trace.get_tracer(__name__)

# Handles one order and returns the status to record, e.g. "dispatched".
OrderHandler = Callable[["ServiceContext", Order], Awaitable[str]]

# A service whose store does not answer (a database restart) waits this long, then looks
# again: an outage is not the service's crash, and must not use up its restarts.
STORE_RETRY_SECONDS = 1.0
# What a claimed batch keeps free for the last acknowledgement before its claim runs out: a
# quarter of the claim, at least 2 s, but never more than half the claim.
CLAIM_MARGIN_SHARE = 0.25
CLAIM_MARGIN_MIN_SECONDS = 2.0


def safe_until(claimed_at: float, claim: float) -> float:
    """The Trio time until which entries claimed at *claimed_at* for *claim* seconds may be
    handled, leaving the margin for the acknowledgement; ``inf`` for a claim without end."""
    if math.isinf(claim):
        return math.inf
    margin = max(claim * CLAIM_MARGIN_SHARE, min(CLAIM_MARGIN_MIN_SECONDS, claim / 2))
    return claimed_at + claim - margin


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

    On a shared store each batch is this node's only for ``store.outbox_claim_seconds``:
    *handle* is cancelled once the claim nears its end (:func:`safe_until`), that order is
    not acknowledged and the rest of the batch is not started (logged once,
    ``events.CLAIM_RUNNING_OUT``); they are looked for again, and once the claim has run out they
    go, oldest first, to whichever node claims them. So no node finishes an order another
    may have taken over. On an exclusive store the claim never ends.

    Each order is handled in a span ``service <name>`` of a trace of its own, linked to the
    checkout that placed it (the outbox entry's ``trace_parent``): a link, not a parent, as the
    handling may come long after that request ended, or on another node.
    """
    task_status.started()
    while True:
        claimed_at = trio.current_time()  # before the claim: its end is no earlier than ours
        try:
            entries = await ctx.store.pending(ctx.name, ctx.store.outbox_batch)
        except StoreError as exc:
            await _store_trouble(ctx, exc)
            continue
        if not entries:
            await _wait_for_news(ctx)
            continue
        await _handle_batch(
            ctx, handle, entries, safe_until(claimed_at, ctx.store.outbox_claim_seconds)
        )


async def _handle_batch(
    ctx: ServiceContext, handle: OrderHandler, entries: Sequence[OutboxEntry], deadline: float
) -> None:
    """Handle and acknowledge *entries* in order, each one started and handled before
    *deadline*; returns at the first that is not (logged) or whose ack the store refused."""
    for index, entry in enumerate(entries):
        status: str | None = None
        if trio.current_time() < deadline:  # else not started: it could not be acked in time
            with trio.move_on_at(deadline), _TRACER.start_as_current_span(
                f"service {ctx.name}", links=links_to(entry.trace_parent),
                attributes={
                    "trioshop.service": ctx.name, "trioshop.order.id": entry.order.order_id,
                },
            ) as span:
                status = await handle(ctx, entry.order)
                span.set_attribute("trioshop.order.status", status)
        if status is None:
            log_event(
                logger, events.CLAIM_RUNNING_OUT, logging.WARNING, service=ctx.name,
                order_id=entry.order.order_id, seq=entry.seq, left=len(entries) - index,
                claim=ctx.store.outbox_claim_seconds,
                action="not acknowledged: taken again, in order, once its claim ran out",
            )
            return
        try:
            await ctx.store.ack(ctx.name, entry, status)
        except StoreError as exc:  # handled, not recorded: it comes again (at least once)
            await _store_trouble(ctx, exc)
            return
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
        events = self._bus.subscribe(system, kind, name=entry.name, doorbell=True)
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
