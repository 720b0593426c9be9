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
from trioshop.shop.model import (
    CartEmpty,
    CartLine,
    CartView,
    InsufficientStock,
    ItemNotInCart,
    Order,
    OrderCounters,
    total_cents,
)
from trioshop.store import Store, StoreError

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
    """Remove a SKU's line; replies with the new view or refuses with ``ItemNotInCart``."""

    sku: str


@attrs.frozen
class Checkout:
    """Turn the cart into an order (stored, stock reserved), publish it, and end the cart."""

    idempotency_key: str | None = None


@attrs.frozen
class ClearCart:
    """Drop the cart (also from the store): the actor ends and its memory is freed."""


class StoreUnavailable(Refusal):
    """The store could not save the change; the cart is unchanged, the request may be retried."""


@attrs.frozen
class CartDeps:
    """What every cart actor is given: the bus it publishes orders on and the store."""

    bus: EventBus
    store: Store
    counters: OrderCounters = attrs.field(factory=OrderCounters)


# -- the actor --------------------------------------------------------------------------


@attrs.define
class Cart:
    """The behaviour of a cart actor, registered as ``cart:{user_id}``.

    Only this actor touches ``_lines``, one message at a time, so no lock is needed. Every
    change is saved to the store before it is acknowledged, and the in-memory lines change
    only once the store has them: a 200 means the item is durable.
    """

    user_id: str
    deps: CartDeps
    _lines: dict[str, CartLine] = attrs.field(factory=dict)

    async def on_start(self, ctx: ActorContext) -> None:
        stored = await self.deps.store.load_cart(self.user_id)
        self._lines = {line.sku: line for line in stored}
        log_event(
            logger, "cart created" if not stored else "cart restored", user_id=self.user_id,
            pid=ctx.pid, items=len(stored),
        )

    async def on_stop(self, ctx: ActorContext, reason: str) -> None:
        log_event(logger, "cart ended", user_id=self.user_id, pid=ctx.pid, reason=reason)

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        match message:
            case AddItem():
                return await self._add(ctx, message)
            case ViewCart():
                return self._view()
            case RemoveItem(sku=sku):
                if sku not in self._lines:
                    raise ItemNotInCart(sku)
                await self._save({k: v for k, v in self._lines.items() if k != sku})
                return self._view()
            case Checkout(idempotency_key=key):
                return await self._checkout(ctx, key)
            case ClearCart():
                await self._save({})
                ctx.stop()
                return None
        raise TypeError(f"cart actor got an unknown message: {message!r}")

    async def _save(self, lines: dict[str, CartLine]) -> None:
        try:
            await self.deps.store.save_cart(self.user_id, tuple(lines.values()))
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        self._lines = lines

    async def _add(self, ctx: ActorContext, add: AddItem) -> CartLine:
        line = self._lines.get(add.sku)
        quantity = add.quantity + (line.quantity if line else 0)
        available = self.deps.store.stock.get(add.sku, 0)
        if quantity > available:
            raise InsufficientStock(add.sku, quantity, available)
        lines = dict(self._lines)
        if line is None:
            lines[add.sku] = CartLine(add.sku, add.title, add.price_cents, quantity)
        else:  # the line keeps its place and the price it was first added at
            lines[add.sku] = attrs.evolve(line, quantity=quantity)
        await self._save(lines)
        log_event(
            logger, "item added", user_id=self.user_id, pid=ctx.pid, sku=add.sku,
            quantity=add.quantity,
        )
        return CartLine(add.sku, add.title, lines[add.sku].price_cents, add.quantity)

    def _view(self) -> CartView:
        lines = tuple(self._lines.values())  # lines are frozen: sharing them is safe
        return CartView(self.user_id, lines, total_cents(lines))

    async def _checkout(self, ctx: ActorContext, idempotency_key: str | None) -> Order:
        if not self._lines:
            raise CartEmpty()
        lines = tuple(self._lines.values())
        order = Order(
            uuid.uuid4().hex, self.user_id, lines, total_cents(lines), int(time.time()),
            idempotency_key,
        )
        try:
            placed = await self.deps.store.checkout(order)
        except StoreError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if placed.order_id == order.order_id:
            # Stored with its outbox entry first: the event only says "look now".
            self.deps.bus.publish(
                ORDER_SYSTEM, ORDER_KIND, f"/orders/{self.user_id}", placed.to_json()
            )
            self.deps.counters.checkouts += 1
            self.deps.counters.revenue_cents += placed.total_cents
            log_event(
                logger, "checkout completed", user_id=self.user_id, pid=ctx.pid,
                order_id=placed.order_id, total=to_json_number(placed.total_cents),
                items=len(lines),
            )
            self._lines = {}
            ctx.stop()
        # else: the key was used for an earlier order of this user, returned as it was;
        # this cart is another session and stays.
        return placed


def new_cart(user_id: str, deps: CartDeps) -> Cart:
    """The registry's cart actor factory (``process.actor`` handler): the user's cart."""
    return Cart(user_id, deps)
