"""The notifier service: emails the customer a confirmation for every checked-out order."""

from __future__ import annotations

import logging

import trio

from trioshop.domain import Order
from trioshop.domain.money import to_json_number
from trioshop.logs import log_event
from trioshop.shop.services import ServiceContext, consume_orders

logger = logging.getLogger("trioshop.notifier")


async def notify(ctx: ServiceContext, order: Order) -> str:
    """Log the EMAIL block for one order: recipient, subject and total."""
    user_id = order.user_id
    log_event(
        logger, "EMAIL sending order confirmation", to=user_id, order_id=order.order_id,
        subject="Your order is confirmed", total=to_json_number(order.total_cents),
        items_count=len(order.lines),
    )
    log_event(logger, f"EMAIL sent to {user_id}", order_id=order.order_id)
    return "sent"


async def run(ctx: ServiceContext, *, task_status: trio.TaskStatus[None]) -> None:
    """The registry's ``notifier`` service: notify the customer of every order on the bus."""
    await consume_orders(ctx, notify, task_status=task_status)
