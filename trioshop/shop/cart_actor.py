"""The cart actor: one per user, owns its lines; checkout publishes the order and ends it."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import attrs

from trioshop import events
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
from trioshop.runtime import CONFLICT_ATTEMPTS, ActorContext, EventBus, Ticket
from trioshop.store import CartConflict, CartWrite, Store, StoredCart, StoreError
from trioshop.telemetry import current_traceparent

T = TypeVar("T")

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
    only once the store has them: a 200 means the item is durable. Every write is
    conditional on the version the actor holds; if another writer (another node) changed the
    cart meanwhile, the actor reloads it and applies the command again, so an add stays an
    add. On a shared store a view, and a refusal, first check the stored version, so
    nothing is answered from a stale copy. The domain's refusals and the store's errors go
    back to the caller; the cart lives on, unchanged.
    """

    refusals: ClassVar[tuple[type[Exception], ...]] = (DomainError, StoreError)

    user_id: str
    deps: CartDeps
    _lines: dict[str, CartLine] = attrs.field(factory=dict)
    _version: int = 0

    async def on_start(self, ctx: ActorContext) -> None:
        self._adopt(await self.deps.store.load_cart(self.user_id))
        log_event(
            logger, events.CART_RESTORED if self._lines else events.CART_CREATED,
            user_id=self.user_id, pid=ctx.pid, items=len(self._lines),
        )

    async def on_stop(self, ctx: ActorContext, reason: str) -> None:
        log_event(logger, events.CART_ENDED, user_id=self.user_id, pid=ctx.pid, reason=reason)

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        if isinstance(message, ViewCart):
            await self._refresh()  # never answer from a copy another node has changed
            return self._view()
        try:
            # A change needs no check first: its write is conditional on the version held.
            return await self._command(ctx, message)
        except DomainError:
            # A refusal decided on a copy another node changed is decided again on the
            # stored cart; on a fresh copy (or an exclusive store) it stands.
            if not await self._refresh():
                raise
            return await self._command(ctx, message)

    async def _refresh(self) -> bool:
        """On a shared store, reload the cart if another node changed it; whether it did."""
        store = self.deps.store
        if not await store.changed_elsewhere(self.user_id, self._version):
            return False
        self._adopt(await store.load_cart(self.user_id))
        return True

    async def _command(self, ctx: ActorContext, message: Any) -> Any:
        match message:
            case AddItem():
                return await self._add(ctx, message)
            case RemoveItem(sku=sku, ticket=ticket):

                def remove(lines: dict[str, CartLine]) -> dict[str, CartLine]:
                    if sku not in lines:
                        raise ItemNotInCart(sku)
                    return {k: v for k, v in lines.items() if k != sku}

                await self._change(remove, ticket)
                return self._view()
            case Checkout(idempotency_key=key, ticket=ticket):
                return await self._checkout(ctx, key, ticket)
            case ClearCart(ticket=ticket):
                await self._change(lambda lines: {}, ticket)
                ctx.stop()
                return None
        raise TypeError(f"cart actor got an unknown message: {message!r}")

    def _adopt(self, stored: StoredCart) -> None:
        self._lines = {line.sku: line for line in stored.lines}
        self._version = stored.version

    async def _until_stored(
        self, attempt: Callable[[], Awaitable[T]], during: str, ticket: Ticket | None
    ) -> T:
        """*attempt* until the store takes it; on a conflict, adopt the cart as stored and
        attempt again (the command applied to the cart as it is now), at most
        ``CONFLICT_ATTEMPTS`` times and never past the *ticket*'s deadline."""
        for _ in (ticket or Ticket()).attempts(CONFLICT_ATTEMPTS):
            try:
                return await attempt()
            except CartConflict as conflict:
                self._adopt(conflict.current)
        raise StoreError(f"the cart kept changing elsewhere {during}; retry")

    async def _change(
        self,
        change: Callable[[dict[str, CartLine]], dict[str, CartLine]],
        ticket: Ticket | None,
    ) -> None:
        """Store ``change(lines)``; on a conflict, reload and apply *change* again."""

        async def attempt() -> None:
            lines = change(self._lines)
            write = CartWrite(
                user_id=self.user_id, lines=tuple(lines.values()), version=self._version
            )
            self._version = await self.deps.store.save_cart(write, ticket=ticket)
            self._lines = lines

        await self._until_stored(attempt, "while this change was made", ticket)

    async def _add(self, ctx: ActorContext, add: AddItem) -> CartLine:
        store, key, added = self.deps.store, add.idempotency_key, add.line

        async def attempt() -> CartLine:
            if key is not None:
                earlier = await store.added_with_key(self.user_id, key)
                if earlier is not None:
                    return earlier  # a retry: answered as the first time, not added again
            lines = add_line(self._lines, added)  # the stock is checked with the write
            answer = attrs.evolve(added, price_cents=lines[added.sku].price_cents)
            write = CartWrite(
                user_id=self.user_id, lines=tuple(lines.values()), version=self._version,
                add_key=None if key is None else (key, answer),
                stock_check=(added.sku, lines[added.sku].quantity),
            )
            self._version = await store.save_cart(write, ticket=add.ticket)
            self._lines = lines
            log_event(
                logger, events.ITEM_ADDED, user_id=self.user_id, pid=ctx.pid, sku=added.sku,
                quantity=added.quantity,
            )
            return answer

        return await self._until_stored(attempt, "while this item was added", add.ticket)

    def _view(self) -> CartView:
        lines = tuple(self._lines.values())  # lines are frozen: sharing them is safe
        return CartView(self.user_id, lines, total_cents(lines))

    async def _checkout(
        self, ctx: ActorContext, idempotency_key: str | None, ticket: Ticket | None
    ) -> Placement:
        async def attempt() -> tuple[Order, Placement]:
            if not self._lines:
                raise CartEmpty()
            lines = tuple(self._lines.values())
            order = Order(
                uuid.uuid4().hex, self.user_id, lines, total_cents(lines), int(time.time()),
                idempotency_key,
            )
            # The actor's span (the request's trace, carried across the mailbox) is stored
            # with the order: each service's handling of it links back to this checkout.
            return order, await self.deps.store.checkout(
                order, version=self._version, ticket=ticket, trace_parent=current_traceparent()
            )

        order, placement = await self._until_stored(attempt, "during checkout", ticket)
        if placement.replayed:
            # The key's earlier order of this user, returned as it was; this cart is another
            # session and stays.
            return placement
        # Stored with its outbox entry first: the event only says "look now".
        self.deps.bus.publish(ORDER_SYSTEM, ORDER_KIND, f"/orders/{self.user_id}", order)
        self.deps.counters.checkouts += 1
        self.deps.counters.revenue_cents += order.total_cents
        log_event(
            logger, events.CHECKOUT_COMPLETED, user_id=self.user_id, pid=ctx.pid,
            order_id=order.order_id, total=to_json_number(order.total_cents),
            items=len(order.lines),
        )
        self._lines, self._version = {}, self._version + 1
        ctx.stop()
        return placement


def new_cart(user_id: str, deps: CartDeps) -> Cart:
    """The registry's cart actor factory (``process.actor`` handler): the user's cart."""
    return Cart(user_id, deps)
