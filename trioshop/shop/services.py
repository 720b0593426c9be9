"""What a supervised shop service gets, and the loop that feeds it orders from the outbox."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from trioshop.logs import log_event
from trioshop.runtime import Subscription
from trioshop.store import Store

logger = logging.getLogger("trioshop.services")

# Handles one order (its JSON form) and returns the status to record, e.g. "dispatched".
OrderHandler = Callable[["ServiceContext", dict[str, Any]], Awaitable[str]]

OUTBOX_BATCH = 100


@attrs.define
class ServiceContext:
    """Outlives restarts of its service: the store keeps its cursor, ``events`` its doorbell.

    Orders come from the store's outbox, not from the bus: an event only says "new orders
    may be waiting", so an event missed while the service was down loses nothing.
    """

    name: str
    store: Store
    events: Subscription
    processed: int = 0


async def _wait_for_news(events: Subscription) -> None:
    await events.receive()
    while True:  # one look at the outbox serves every event that came meanwhile
        try:
            events.receive_nowait()
        except trio.WouldBlock:
            return


async def consume_orders(
    ctx: ServiceContext, handle: OrderHandler, *, task_status: trio.TaskStatus[None]
) -> None:
    """Run *handle* once per outbox order this service has not acknowledged, in order.

    Ready as soon as it listens. At least once: an order is acknowledged (cursor advanced,
    status recorded) only after *handle* returned, so a crash or a restart redelivers it.
    A crash in *handle* propagates for the supervisor to restart the service.
    """
    task_status.started()
    while True:
        entries = await ctx.store.pending(ctx.name, OUTBOX_BATCH)
        if not entries:
            await _wait_for_news(ctx.events)
            continue
        for entry in entries:
            status = await handle(ctx, entry.order.to_json())
            await ctx.store.ack(ctx.name, entry.seq, entry.order.order_id, status)
            ctx.processed += 1
            log_event(
                logger, "order handled", service=ctx.name, order_id=entry.order.order_id,
                status=status, seq=entry.seq,
            )
