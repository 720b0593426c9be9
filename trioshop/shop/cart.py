"""The cart actor: one per user, owns its lines; checkout publishes the order and ends it."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import attrs

from trioshop.logs import log_event
from trioshop.money import to_json_number
from trioshop.runtime import ActorContext, EventBus, Refusal

logger = logging.getLogger("trioshop.cart")

ORDER_SYSTEM = "shop"
ORDER_KIND = "order.checkout"


# -- messages ---------------------------------------------------------------------------


@attrs.frozen
class AddItem:
    """Add *quantity* of a product (price fixed now, at add time); replies with the added line."""

    sku: str
    title: str
    price_cents: int
    quantity: int


@attrs.frozen
class ViewCart:
    """Reply with the current :class:`CartView`."""


@attrs.frozen
class RemoveItem:
    """Remove a SKU's line; replies with the new view or refuses with :class:`ItemNotInCart`."""

    sku: str


@attrs.frozen
class Checkout:
    """Turn the cart into an :class:`Order`, publish it, and end the cart."""


@attrs.frozen
class ClearCart:
    """Drop the cart: the actor ends and its memory is freed."""


# -- refusals ---------------------------------------------------------------------------


class CartEmpty(Refusal):
    """Checkout of a cart that has no lines."""

    def __init__(self) -> None:
        super().__init__("Cart is empty")


class ItemNotInCart(Refusal, LookupError):
    """Removal of a SKU the cart does not hold."""

    def __init__(self, sku: str) -> None:
        super().__init__(f"Item not in cart: {sku}")


# -- values -----------------------------------------------------------------------------


@attrs.frozen
class CartLine:
    """One SKU in a cart, at the price it had when first added."""

    sku: str
    title: str
    price_cents: int
    quantity: int

    def to_json(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "title": self.title,
            "price": to_json_number(self.price_cents),
            "quantity": self.quantity,
        }


def _lines_json(lines: tuple[CartLine, ...]) -> list[dict[str, Any]]:
    return [line.to_json() for line in lines]


@attrs.frozen
class CartView:
    """A snapshot of a cart: lines in the order first added, and the exact total."""

    user_id: str
    lines: tuple[CartLine, ...]
    total_cents: int

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "items": _lines_json(self.lines),
            "total": to_json_number(self.total_cents),
        }


@attrs.frozen
class Order:
    """A checked-out cart: what was bought, for how much, and when (unix seconds)."""

    order_id: str
    user_id: str
    lines: tuple[CartLine, ...]
    total_cents: int
    timestamp: int

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "user_id": self.user_id,
            "items": _lines_json(self.lines),
            "total": to_json_number(self.total_cents),
            "timestamp": self.timestamp,
        }


# -- the actor --------------------------------------------------------------------------


@attrs.define
class Cart:
    """The behaviour of a cart actor, registered as ``cart:{user_id}``.

    Only this actor touches ``_lines``, one message at a time, so no lock is needed.
    """

    user_id: str
    bus: EventBus
    _lines: dict[str, CartLine] = attrs.field(factory=dict)

    async def on_start(self, ctx: ActorContext) -> None:
        log_event(logger, "cart created", user_id=self.user_id, pid=ctx.pid)

    async def on_stop(self, ctx: ActorContext, reason: str) -> None:
        log_event(logger, "cart ended", user_id=self.user_id, pid=ctx.pid, reason=reason)

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        match message:
            case AddItem():
                return self._add(ctx, message)
            case ViewCart():
                return self._view()
            case RemoveItem(sku=sku):
                if self._lines.pop(sku, None) is None:
                    raise ItemNotInCart(sku)
                return self._view()
            case Checkout():
                return self._checkout(ctx)
            case ClearCart():
                ctx.stop()
                return None
        raise TypeError(f"cart actor got an unknown message: {message!r}")

    def _add(self, ctx: ActorContext, add: AddItem) -> CartLine:
        line = self._lines.get(add.sku)
        if line is None:
            self._lines[add.sku] = CartLine(add.sku, add.title, add.price_cents, add.quantity)
        else:  # the line keeps its place and the price it was first added at
            self._lines[add.sku] = attrs.evolve(line, quantity=line.quantity + add.quantity)
        log_event(
            logger, "item added", user_id=self.user_id, pid=ctx.pid, sku=add.sku,
            quantity=add.quantity,
        )
        return CartLine(add.sku, add.title, add.price_cents, add.quantity)

    def _snapshot(self) -> tuple[tuple[CartLine, ...], int]:
        lines = tuple(self._lines.values())  # lines are frozen: sharing them is safe
        return lines, sum(line.price_cents * line.quantity for line in lines)

    def _view(self) -> CartView:
        lines, total = self._snapshot()
        return CartView(self.user_id, lines, total)

    def _checkout(self, ctx: ActorContext) -> Order:
        if not self._lines:
            raise CartEmpty()
        lines, total = self._snapshot()
        order = Order(uuid.uuid4().hex, self.user_id, lines, total, int(time.time()))
        self.bus.publish(ORDER_SYSTEM, ORDER_KIND, f"/orders/{self.user_id}", order.to_json())
        log_event(
            logger, "checkout completed", user_id=self.user_id, pid=ctx.pid,
            order_id=order.order_id, total=to_json_number(total), items=len(lines),
        )
        ctx.stop()
        return order


def new_cart(user_id: str, bus: EventBus) -> Cart:
    """The registry's cart actor factory (``process.actor`` handler): a fresh, empty cart."""
    return Cart(user_id, bus)
