"""The cart actor: one per user, owns its lines; checkout publishes the order and ends it."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, ClassVar

import attrs

from trioshop.domain import (
    CartEmpty,
    CartLine,
    CartView,
    DomainError,
    ItemNotInCart,
    Order,
    Placement,
    add_line,
    total_cents,
)
from trioshop.domain.money import to_json_number
from trioshop.logs import log_event
from trioshop.runtime import ActorContext, EventBus, Ticket
from trioshop.store import Store, StoreError

logger = logging.getLogger("trioshop.cart")

# Where checkout publishes a placed order: the services' doorbell.
ORDER_SYSTEM = "shop"
ORDER_KIND = "order.checkout"


def cart_name(user_id: str) -> str:
    """The registered name of *user_id*'s cart actor."""
    return f"cart:{user_id}"


# -- messages ---------------------------------------------------------------------------


@attrs.frozen
class AddItem:
    """Add the line (price fixed now, at add time); replies with the line as added now.

    With *idempotency_key*, an add this user already made with that key is answered again
    and not repeated. The *ticket* decides whether a late add still happens (see Ticket).
    """

    line: CartLine
    idempotency_key: str | None = None
    ticket: Ticket | None = None


@attrs.frozen
class ViewCart:
    """Reply with the current :class:`CartView`."""


@attrs.frozen
class RemoveItem:
    """Remove a SKU's line; replies with the new view or refuses with ``ItemNotInCart``."""

    sku: str
    ticket: Ticket | None = None


@attrs.frozen
class Checkout:
    """Turn the cart into an order (stored, stock reserved), publish it, and end the cart.

    Replies with the :class:`Placement`; a replay (the key's earlier order) leaves the cart.
    """

    idempotency_key: str | None = None
    ticket: Ticket | None = None


@attrs.frozen
class ClearCart:
    """Drop the cart (also from the store): the actor ends and its memory is freed."""

    ticket: Ticket | None = None


@attrs.define
class OrderCounters:
    """Orders placed and their value since the server started (for metrics)."""

    checkouts: int = 0
    revenue_cents: int = 0


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
    only once the store has them: a 200 means the item is durable. The domain's refusals
    and the store's errors go back to the caller; the cart lives on, unchanged.
    """

    refusals: ClassVar[tuple[type[Exception], ...]] = (DomainError, StoreError)

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
            case RemoveItem(sku=sku, ticket=ticket):
                if sku not in self._lines:
                    raise ItemNotInCart(sku)
                await self._save({k: v for k, v in self._lines.items() if k != sku}, ticket)
                return self._view()
            case Checkout(idempotency_key=key, ticket=ticket):
                return await self._checkout(ctx, key, ticket)
            case ClearCart(ticket=ticket):
                await self._save({}, ticket)
                ctx.stop()
                return None
        raise TypeError(f"cart actor got an unknown message: {message!r}")

    async def _save(
        self,
        lines: dict[str, CartLine],
        ticket: Ticket | None,
        add_key: tuple[str, CartLine] | None = None,
    ) -> None:
        await self.deps.store.save_cart(
            self.user_id, tuple(lines.values()), ticket=ticket, add_key=add_key
        )
        self._lines = lines

    async def _add(self, ctx: ActorContext, add: AddItem) -> CartLine:
        key, added = add.idempotency_key, add.line
        if key is not None:
            earlier = await self.deps.store.added_with_key(self.user_id, key)
            if earlier is not None:
                return earlier  # a retry: answered as the first time, not added again
        available = self.deps.store.stock.get(added.sku, 0)
        lines = add_line(self._lines, added, available)
        answer = attrs.evolve(added, price_cents=lines[added.sku].price_cents)
        await self._save(lines, add.ticket, None if key is None else (key, answer))
        log_event(
            logger, "item added", user_id=self.user_id, pid=ctx.pid, sku=added.sku,
            quantity=added.quantity,
        )
        return answer

    def _view(self) -> CartView:
        lines = tuple(self._lines.values())  # lines are frozen: sharing them is safe
        return CartView(self.user_id, lines, total_cents(lines))

    async def _checkout(
        self, ctx: ActorContext, idempotency_key: str | None, ticket: Ticket | None
    ) -> Placement:
        if not self._lines:
            raise CartEmpty()
        lines = tuple(self._lines.values())
        order = Order(
            uuid.uuid4().hex, self.user_id, lines, total_cents(lines), int(time.time()),
            idempotency_key,
        )
        placement = await self.deps.store.checkout(order, ticket=ticket)
        if placement.replayed:
            # The key's earlier order of this user, returned as it was; this cart is another
            # session and stays.
            return placement
        # Stored with its outbox entry first: the event only says "look now".
        self.deps.bus.publish(ORDER_SYSTEM, ORDER_KIND, f"/orders/{self.user_id}", order)
        self.deps.counters.checkouts += 1
        self.deps.counters.revenue_cents += order.total_cents
        log_event(
            logger, "checkout completed", user_id=self.user_id, pid=ctx.pid,
            order_id=order.order_id, total=to_json_number(order.total_cents), items=len(lines),
        )
        self._lines = {}
        ctx.stop()
        return placement


def new_cart(user_id: str, deps: CartDeps) -> Cart:
    """The registry's cart actor factory (``process.actor`` handler): the user's cart."""
    return Cart(user_id, deps)
