"""Fake services for supervisor tests: a delivery service that crashes on its first orders."""

from __future__ import annotations

import os

import trio

from trioshop.domain import Order
from trioshop.shop.delivery import deliver
from trioshop.shop.services import ServiceContext, consume_orders

# How many more orders each fake service should crash on: tests set it in process, or
# TRIOSHOP_FAKE_CRASHES for a server subprocess.
CRASHES_LEFT: dict[str, int] = {"delivery": int(os.environ.get("TRIOSHOP_FAKE_CRASHES", "0"))}


async def crashing_delivery(ctx: ServiceContext, *, task_status: trio.TaskStatus[None]) -> None:
    """Deliver orders, but raise on the first CRASHES_LEFT[ctx.name] of them."""

    async def handle(ctx: ServiceContext, order: Order) -> str:
        if CRASHES_LEFT.get(ctx.name, 0) > 0:
            CRASHES_LEFT[ctx.name] -= 1
            raise RuntimeError(f"injected crash on order {order.order_id}")
        return await deliver(ctx, order)

    await consume_orders(ctx, handle, task_status=task_status)


async def stalled(ctx: ServiceContext, *, task_status: trio.TaskStatus[None]) -> None:
    """Ready, but never handles an order: orders pile up in the outbox."""
    task_status.started()
    await trio.sleep_forever()
