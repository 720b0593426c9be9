"""The shop: carts as actors on the host, orders in the store, services under the supervisor."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from trioshop.config import Settings
from trioshop.logs import log_event
from trioshop.registry import Product, Registry, resolve_callable
from trioshop.runtime import (
    Actor,
    ActorCrashed,
    ActorEnded,
    ActorHost,
    Behaviour,
    EventBus,
    Supervisor,
    open_actor_host,
    open_event_bus,
    open_supervisor,
)
from trioshop.shop.cart import (
    ORDER_KIND,
    ORDER_SYSTEM,
    AddItem,
    CartDeps,
    Checkout,
    ClearCart,
    RemoveItem,
    ViewCart,
)
from trioshop.shop.catalog import Catalog
from trioshop.shop.model import CartLine, CartView, IdempotencyKeyReused, Order
from trioshop.shop.services import ServiceContext
from trioshop.store import Store, StoredOrder, open_store

logger = logging.getLogger("trioshop.shop")

CartFactory = Callable[[str, CartDeps], Behaviour]

# A cart can end between our lookup and our message (checkout, idle); a fresh one is then
# spawned. Twice in a row is already unusual, a third time means something is wrong.
_ADD_ATTEMPTS = 3


class NoActiveCart(LookupError):
    """The user has no cart, live or stored (never started, checked out, or cleared)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"No active cart for user {user_id!r}")
        self.user_id = user_id


def cart_name(user_id: str) -> str:
    """The registered name of *user_id*'s cart actor."""
    return f"cart:{user_id}"


@attrs.define
class Shop:
    """The operations the HTTP layer offers, each a message exchange with one cart actor.

    A cart that was passivated (idle) or lived in a previous run of the server is brought
    back transparently: its actor is spawned again and reloads its lines from the store.
    Every method waits at most the settings' timeout and raises the runtime's errors
    (``ActorTimeout``, ``MailboxFull``, ``TooManyActors``, ``ActorCrashed``) for the HTTP
    layer to map; domain refusals (``CartEmpty``, ``InsufficientStock``...) come from the cart.
    """

    registry: Registry
    catalog: Catalog
    settings: Settings
    host: ActorHost
    bus: EventBus
    store: Store
    supervisor: Supervisor
    cart_factory: CartFactory
    cart_mailbox: int
    services: dict[str, ServiceContext] = attrs.field(factory=dict)

    def _spawn_cart(self, user_id: str) -> Actor:
        deps = CartDeps(self.bus, self.store)
        return self.host.get_or_spawn(
            cart_name(user_id),
            lambda: self.cart_factory(user_id, deps),
            mailbox=self.cart_mailbox,
            idle_timeout=self.settings.cart_idle_timeout,
        )

    def _existing_cart(self, user_id: str) -> Actor | None:
        """The live cart, or a restored one if the store holds a cart for the user."""
        cart = self.host.lookup(cart_name(user_id))
        if cart is None and user_id in self.store.cart_owners:
            cart = self._spawn_cart(user_id)
        return cart

    def stock(self, product: Product) -> int:
        """Live stock of *product*."""
        return self.store.stock.get(product.sku, 0)

    async def add_item(self, user_id: str, product: Product, quantity: int) -> CartLine:
        """Add *quantity* of *product* to the user's cart, starting the cart if needed.

        Returns only once the cart has saved the line, so a success means it is there.
        """
        message = AddItem(product.sku, product.title, product.price_cents, quantity)
        for _ in range(_ADD_ATTEMPTS):
            cart = self._spawn_cart(user_id)
            try:
                line: CartLine = await self.host.request(
                    cart, message, timeout=self.settings.read_timeout
                )
            except ActorCrashed:
                raise
            except ActorEnded:
                continue  # the cart ended just now (checkout, idle); the next loop starts anew
            return line
        raise ActorEnded(f"the cart of {user_id!r} kept ending; retry")

    async def _ask(self, user_id: str, message: object, timeout: float) -> Any:
        """Request/reply with the user's cart; :class:`NoActiveCart` if it has none."""
        cart = self._existing_cart(user_id)
        if cart is None:
            raise NoActiveCart(user_id)
        try:
            return await self.host.request(cart, message, timeout=timeout)
        except ActorCrashed:
            raise
        except ActorEnded:
            raise NoActiveCart(user_id) from None  # it ended while our message waited

    async def view(self, user_id: str) -> CartView | None:
        """The user's cart, or ``None`` when there is none."""
        try:
            view: CartView = await self._ask(user_id, ViewCart(), self.settings.read_timeout)
        except NoActiveCart:
            return None
        return view

    async def checkout(self, user_id: str, idempotency_key: str | None = None) -> Order:
        """Check the cart out: stored with its stock reserved, published, and the cart ends.

        With *idempotency_key*, a repeat of an earlier checkout returns that order again
        (even after its cart ended); a key used by another user raises
        ``IdempotencyKeyReused``. Raises :class:`NoActiveCart`, ``CartEmpty`` and
        ``InsufficientStock`` (the cart stays as it was).
        """
        if idempotency_key is not None:
            earlier = await self._order_for_key(user_id, idempotency_key)
            if earlier is not None:
                return earlier
        try:
            order: Order = await self._ask(
                user_id, Checkout(idempotency_key), self.settings.checkout_timeout
            )
        except NoActiveCart:
            # A concurrent request with the same key may have just checked this cart out.
            if idempotency_key is not None:
                earlier = await self._order_for_key(user_id, idempotency_key)
                if earlier is not None:
                    return earlier
            raise
        return order

    async def _order_for_key(self, user_id: str, idempotency_key: str) -> Order | None:
        earlier = await self.store.order_by_key(idempotency_key)
        if earlier is not None and earlier.user_id != user_id:
            raise IdempotencyKeyReused()
        return earlier

    async def remove_item(self, user_id: str, sku: str) -> CartView:
        """Remove *sku*; raises ``ItemNotInCart`` (or :class:`NoActiveCart`) if it is not there."""
        view: CartView = await self._ask(user_id, RemoveItem(sku), self.settings.read_timeout)
        return view

    async def clear(self, user_id: str) -> None:
        """Delete the user's cart, if any, and return once its actor has ended."""
        with contextlib.suppress(NoActiveCart):
            await self._ask(user_id, ClearCart(), self.settings.read_timeout)

    async def order(self, order_id: str) -> StoredOrder | None:
        return await self.store.order(order_id)

    async def orders_for(self, user_id: str) -> list[StoredOrder]:
        return await self.store.orders_for(user_id)

    @property
    def failed_services(self) -> list[str]:
        return self.supervisor.failed


@asynccontextmanager
async def open_shop(
    registry: Registry,
    settings: Settings,
    *,
    cart_factory: CartFactory | None = None,
) -> AsyncIterator[Shop]:
    """Open the store, the actor host, the event bus and the services, in that order.

    Ready on entry: the store is migrated and seeded, every service has subscribed (or
    failed its first attempt). On exit the services stop first, then the bus closes, then
    the carts end, then the store finishes its queued writes and closes: the nesting below
    is the shutdown order. Raises ``LookupError`` if the registry names a callable that
    cannot be imported.
    """
    actor = registry.actor("cart")
    factory: CartFactory = cart_factory or resolve_callable(actor.handler)
    service_targets = {s.name: resolve_callable(s.process) for s in registry.services}
    # Trio runs actors on one thread; process.host workers bound the threads doing blocking
    # work (SQLite) so a burst of it cannot exhaust the thread pool.
    blocking = trio.CapacityLimiter(registry.process_host.workers)
    mailbox = settings.mailbox_capacity or actor.mailbox
    async with open_store(
        settings.data_dir, registry.products, blocking, synchronous=settings.sqlite_synchronous
    ) as store, open_actor_host(
        mailbox_capacity=mailbox,
        max_actors=settings.max_live_carts,
        shutdown_timeout=settings.shutdown_timeout,
    ) as host:
        with open_event_bus(settings.bus_capacity) as bus:
            async with open_supervisor() as supervisor:
                shop = Shop(
                    registry, Catalog.from_registry(registry), settings, host, bus, store,
                    supervisor, factory, mailbox,
                )
                for service in registry.services:
                    system, kind = service.subscribe or (ORDER_SYSTEM, ORDER_KIND)
                    ctx = ServiceContext(
                        service.name, store, bus.subscribe(system, kind, name=service.name)
                    )
                    shop.services[service.name] = ctx
                    await supervisor.start(
                        service.name, service_targets[service.name], service.restart, ctx
                    )
                log_event(
                    logger, "shop started", products=len(shop.catalog),
                    services=",".join(shop.services), store=settings.data_dir or "memory",
                    stored_carts=len(store.cart_owners),
                )
                yield shop
                log_event(logger, "shop stopping", live_carts=len(host))


async def serve_shop(
    registry: Registry,
    settings: Settings,
    stop: trio.Event,
    *,
    cart_factory: CartFactory | None = None,
    task_status: trio.TaskStatus[Shop] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the shop as a task until *stop* is set; reports the ready :class:`Shop` on start."""
    async with open_shop(registry, settings, cart_factory=cart_factory) as shop:
        task_status.started(shop)
        await stop.wait()
