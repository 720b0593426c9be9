"""What a supervised shop service gets: its name, its event subscription and its memory."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from trioshop.logs import log_event
from trioshop.runtime import Subscription

logger = logging.getLogger("trioshop.services")

OrderHandler = Callable[["ServiceContext", dict[str, Any]], Awaitable[None]]


@attrs.define
class ServiceContext:
    """Outlives restarts of its service: the subscription keeps buffering while it backs off.

    ``handled`` holds the ids of orders already processed, so a redelivered order is
    recognised and skipped (handlers are idempotent by ``order_id``).
    """

    name: str
    events: Subscription
    handled: set[str] = attrs.field(factory=set)
    processed: int = 0


async def consume_orders(
    ctx: ServiceContext, handle: OrderHandler, *, task_status: trio.TaskStatus[None]
) -> None:
    """Run *handle* once per order event, skipping orders already handled.

    Ready as soon as it listens. Returns when the subscription ends; a crash in *handle*
    propagates so the supervisor restarts the service (the order that crashed is not marked
    handled).
    """
    task_status.started()
    async for event in ctx.events:
        order: dict[str, Any] = event.data
        if order["order_id"] in ctx.handled:
            log_event(
                logger, "duplicate order skipped", service=ctx.name, order_id=order["order_id"]
            )
            continue
        await handle(ctx, order)
        ctx.handled.add(order["order_id"])
        ctx.processed += 1
