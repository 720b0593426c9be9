"""The delivery service: schedules, packs and dispatches every checked-out order."""

from __future__ import annotations

import logging

import trio

from trioshop.domain import Order
from trioshop.domain.money import to_json_number
from trioshop.logs import log_event
from trioshop.shop.services import ServiceContext, consume_orders

logger = logging.getLogger("trioshop.delivery")


async def deliver(ctx: ServiceContext, order: Order) -> str:
    """Log the DELIVERY block for one order: scheduling, one line per item, dispatched."""
    user_id, order_id = order.user_id, order.order_id
    log_event(
        logger, "DELIVERY scheduling", user_id=user_id, order_id=order_id,
        items_count=len(order.lines), total=to_json_number(order.total_cents),
    )
    for line in order.lines:
        log_event(
            logger, "DELIVERY packing item", order_id=order_id, sku=line.sku,
            title=line.title, quantity=line.quantity,
        )
    log_event(logger, f"DELIVERY package dispatched for user {user_id}", order_id=order_id)
    return "dispatched"


async def run(ctx: ServiceContext, *, task_status: trio.TaskStatus[None]) -> None:
    """The registry's ``delivery`` service: deliver every order published on the bus."""
    await consume_orders(ctx, deliver, task_status=task_status)
