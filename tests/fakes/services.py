"""Fake services for supervisor tests: a delivery service that crashes on its first orders."""

from __future__ import annotations

from typing import Any

import trio

from trioshop.shop.delivery import deliver
from trioshop.shop.services import ServiceContext, consume_orders

# How many more orders each fake service should crash on; tests set it.
CRASHES_LEFT: dict[str, int] = {}


async def crashing_delivery(ctx: ServiceContext, *, task_status: trio.TaskStatus[None]) -> None:
    """Deliver orders, but raise on the first CRASHES_LEFT[ctx.name] of them."""

    async def handle(ctx: ServiceContext, order: dict[str, Any]) -> str:
        if CRASHES_LEFT.get(ctx.name, 0) > 0:
            CRASHES_LEFT[ctx.name] -= 1
            raise RuntimeError(f"injected crash on order {order['order_id']}")
        return await deliver(ctx, order)

    await consume_orders(ctx, handle, task_status=task_status)
