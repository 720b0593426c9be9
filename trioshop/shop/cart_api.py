"""The cart API: each operation is a message exchange with one user's cart actor."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import attrs
import trio

from trioshop.config import Settings
from trioshop.domain import (
    CartEmpty,
    CartLine,
    CartView,
    NoActiveCart,
    Order,
    replay,
)
from trioshop.runtime import (
    ACTOR_ENDED_ATTEMPTS,
    Actor,
    ActorCrashed,
    ActorEnded,
    ActorHost,
    Behaviour,
    Ticket,
)
from trioshop.shop.cart_actor import (
    AddItem,
    CartDeps,
    Checkout,
    ClearCart,
    RemoveItem,
    ViewCart,
    cart_name,
)
from trioshop.store import Store, StoredOrder

# Builds the behaviour of one user's cart (the registry's ``process.actor`` handler).
CartFactory = Callable[[str, CartDeps], Behaviour]


def _ticket(timeout: float) -> Ticket:
    """A write's ticket, its deadline *timeout* from now: one budget for every try of it
    (the store bounds its lock waits by it)."""
    return Ticket(deadline=trio.current_time() + timeout)


@attrs.frozen
class CartDefinition:
    """How new carts are made: their behaviour factory and mailbox size (a reload swaps it)."""

    factory: CartFactory
    mailbox: int


@attrs.define
class Carts:
    """The operations the HTTP layer offers on carts, each a message exchange with one actor.

    A cart that was passivated (idle) or lived in a previous run of the server is brought
    back transparently: its actor is spawned again and reloads its lines from the store.
    Every method waits at most the settings' timeout and raises the runtime's errors
    (``ActorTimeout``, ``MailboxFull``, ``TooManyActors``, ``ActorCrashed``) for the HTTP
    layer to map; the domain's refusals (``CartEmpty``, ``InsufficientStock``...) and
    ``StoreError`` come from the cart.
    """

    _host: ActorHost
    _store: Store
    _deps: CartDeps
    _settings: Settings
    definition: CartDefinition

    def _spawn(self, user_id: str) -> Actor:
        definition, deps = self.definition, self._deps
        return self._host.get_or_spawn(
            cart_name(user_id),
            lambda: definition.factory(user_id, deps),
            mailbox=definition.mailbox,
            idle_timeout=self._settings.cart_idle_timeout,
        )

    async def _existing(self, user_id: str) -> Actor | None:
        """The live cart, or a restored one if the store holds a cart for the user."""
        cart = self._host.lookup(cart_name(user_id))
        if cart is None and await self._store.has_cart(user_id):
            cart = self._spawn(user_id)  # atomic: a cart spawned meanwhile is the one returned
        return cart

    async def add_item(
        self, user_id: str, line: CartLine, idempotency_key: str | None = None
    ) -> CartLine:
        """Add *line* to the user's cart, starting the cart if needed.

        Returns the line as added now, only once the cart has saved it: a success means it is
        there. With *idempotency_key*, a repeat of an add this user made with that key is
        answered as the first time and adds nothing. Raises ``InsufficientStock`` when the
        cart would hold more than the stock, and ``ActorTimeout`` whose ``maybe_applied``
        says whether the add can still have happened.
        """
        ticket = _ticket(self._settings.read_timeout)
        message = AddItem(line, idempotency_key, ticket)
        for _ in ticket.attempts(ACTOR_ENDED_ATTEMPTS):
            cart = self._spawn(user_id)
            try:
                added: CartLine = await self._write(cart, message, ticket)
            except ActorCrashed:
                raise
            except ActorEnded:
                continue  # the cart ended just now (checkout, idle); the next loop starts anew
            return added
        raise ActorEnded(f"the cart of {user_id!r} kept ending; retry")

    async def _write(self, cart: Actor, message: object, ticket: Ticket) -> Any:
        """A request whose change happens only if the cart starts it before the *ticket*'s
        deadline (a retry gets what is left of it).

        At the deadline an unstarted change is abandoned (never applied); a started one is
        waited for up to ``settle_timeout`` more, so a timeout tells the truth.
        """
        return await self._host.request(
            cart, message, timeout=ticket.deadline - trio.current_time(), ticket=ticket,
            settle_timeout=self._settings.settle_timeout,
        )

    async def _ask(self, user_id: str, message: object, within: float | Ticket) -> Any:
        """Request/reply with the user's cart; :class:`NoActiveCart` if it has none.

        *within* is a read's timeout in seconds, or a write's :class:`Ticket` (see
        :meth:`_write`)."""
        cart = await self._existing(user_id)
        if cart is None:
            raise NoActiveCart(user_id)
        try:
            if isinstance(within, Ticket):
                return await self._write(cart, message, within)
            return await self._host.request(cart, message, timeout=within)
        except ActorCrashed:
            raise
        except ActorEnded:
            raise NoActiveCart(user_id) from None  # it ended while our message waited

    async def view(self, user_id: str) -> CartView | None:
        """The user's cart, or ``None`` when there is none."""
        try:
            view: CartView = await self._ask(user_id, ViewCart(), self._settings.read_timeout)
        except NoActiveCart:
            return None
        return view

    async def checkout(self, user_id: str, idempotency_key: str | None = None) -> Order:
        """Check the cart out: stored with its stock reserved, published, and the cart ends.

        With *idempotency_key*, a repeat of an earlier checkout returns that order again,
        even after its cart ended (the store answers it inside the checkout transaction
        while a cart is there; here when none is left); a key used by another user raises
        ``IdempotencyKeyReused``. Raises :class:`NoActiveCart`, ``CartEmpty`` and
        ``InsufficientStock`` (the cart stays as it was).
        """
        ticket = _ticket(self._settings.checkout_timeout)
        try:
            placement = await self._ask(user_id, Checkout(idempotency_key, ticket), ticket)
        except (NoActiveCart, CartEmpty):
            if idempotency_key is None:
                raise
            # Nothing to check out: a retry of a checkout that went through gets its order.
            earlier = replay(await self._store.order_by_key(idempotency_key), user_id)
            if earlier is None:
                raise
            return earlier
        order: Order = placement.order
        return order

    async def remove_item(self, user_id: str, sku: str) -> CartView:
        """Remove *sku*; raises ``ItemNotInCart`` (or :class:`NoActiveCart`) if it is not there."""
        ticket = _ticket(self._settings.read_timeout)
        view: CartView = await self._ask(user_id, RemoveItem(sku, ticket), ticket)
        return view

    async def clear(self, user_id: str) -> None:
        """Delete the user's cart, if any: once this returns the store no longer has it and the
        cart's name is free (its task may still be finishing)."""
        ticket = _ticket(self._settings.read_timeout)
        with contextlib.suppress(NoActiveCart):
            await self._ask(user_id, ClearCart(ticket), ticket)

    async def order(self, order_id: str) -> StoredOrder | None:
        """The stored order *order_id* with its services' outcomes, or ``None``."""
        return await self._store.order(order_id)

    async def orders_for(self, user_id: str) -> list[StoredOrder]:
        """The user's stored orders, newest first."""
        return await self._store.orders_for(user_id)
