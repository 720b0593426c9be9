"""The delivery service: schedules, packs and dispatches every checked-out order."""

from __future__ import annotations

import logging
from typing import Any

import trio

from trioshop.logs import log_event
from trioshop.shop.services import ServiceContext, consume_orders

logger = logging.getLogger("trioshop.delivery")


async def deliver(ctx: ServiceContext, order: dict[str, Any]) -> str:
    """Log the DELIVERY block for one order: scheduling, one line per item, dispatched."""
    user_id, order_id = order["user_id"], order["order_id"]
    log_event(
        logger, "DELIVERY scheduling", user_id=user_id, order_id=order_id,
        items_count=len(order["items"]), total=order["total"],
    )
    for item in order["items"]:
        log_event(
            logger, "DELIVERY packing item", order_id=order_id, sku=item["sku"],
            title=item["title"], quantity=item["quantity"],
        )
    log_event(logger, f"DELIVERY package dispatched for user {user_id}", order_id=order_id)
    return "dispatched"


async def run(ctx: ServiceContext, *, task_status: trio.TaskStatus[None]) -> None:
    """The registry's ``delivery`` service: deliver every order published on the bus."""
    await consume_orders(ctx, deliver, task_status=task_status)
