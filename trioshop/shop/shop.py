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
from trioshop.registry import (
    ActorDefinition,
    Product,
    Registry,
    RegistryError,
    ServiceDefinition,
    load_registry,
    resolve_callable,
)
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
from trioshop.shop.model import CartLine, CartView, IdempotencyKeyReused, Order, OrderCounters
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


def runnable_problems(registry: Registry) -> list[str]:
    """What would stop the shop from running *registry*, each naming file and entry."""
    problems = []
    for what in ("http_service", "router", "process_host"):
        try:
            getattr(registry, what)
        except LookupError as exc:
            problems.append(f"{registry.folder}: {exc}")
    try:
        entries: list[ActorDefinition | ServiceDefinition] = [registry.actor("cart")]
    except LookupError as exc:
        problems.append(f"{registry.folder}: {exc}")
        entries = []
    entries.extend(registry.services)
    for entry in entries:
        reference = entry.handler if isinstance(entry, ActorDefinition) else entry.process
        try:
            resolve_callable(reference)
        except (LookupError, TypeError) as exc:
            problems.append(f"{entry.source}: entry '{entry.id}' ({entry.KIND}): {exc}")
    return problems


def load_runnable_registry(folder: str) -> Registry:
    """Load *folder* and check the shop can run it; :class:`RegistryError` lists every problem.

    Blocking (reads files, imports modules): call it from a worker thread in async code.
    """
    registry = load_registry(folder)
    problems = runnable_problems(registry)
    if problems:
        raise RegistryError(problems)
    return registry


@attrs.frozen
class ReloadReport:
    """What a registry reload changed."""

    version: str
    products: int
    services_restarted: list[str]
    services_started: list[str]
    services_stopped: list[str]
    restart_required: list[str]


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
    blocking: trio.CapacityLimiter
    fixed_cart_factory: bool = False  # a factory given by the caller survives reloads
    services: dict[str, ServiceContext] = attrs.field(factory=dict)
    counters: OrderCounters = attrs.field(factory=OrderCounters)
    _reload_lock: trio.Lock = attrs.field(factory=trio.Lock)

    def _spawn_cart(self, user_id: str) -> Actor:
        deps = CartDeps(self.bus, self.store, self.counters)
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

    # -- services and reloads -----------------------------------------------------------

    async def start_service(self, entry: ServiceDefinition) -> None:
        """Supervise the service *entry* with a fresh doorbell subscription."""
        target = resolve_callable(entry.process)
        system, kind = entry.subscribe or (ORDER_SYSTEM, ORDER_KIND)
        events = self.bus.subscribe(system, kind, name=entry.name)
        ctx = ServiceContext(entry.name, self.store, events)
        self.services[entry.name] = ctx
        await self.supervisor.start(entry.name, target, entry.restart, ctx)

    async def stop_service(self, name: str) -> None:
        """Stop the service *name* and drop its subscription (its outbox cursor stays)."""
        await self.supervisor.stop(name)
        self.services.pop(name).events.close()

    async def reload_from_disk(self) -> ReloadReport:
        """Re-read and check the registry folder in a worker thread, then switch to it.

        Reading files and importing the modules it names is blocking work, hence the thread.
        Raises :class:`RegistryError` (nothing changed) as :meth:`reload` does.
        """
        registry = await trio.to_thread.run_sync(
            load_runnable_registry, self.registry.folder, limiter=self.blocking
        )
        return await self._switch(registry)

    async def reload(self, registry: Registry) -> ReloadReport:
        """Switch to *registry*: validated whole first, then swapped in one step.

        Raises :class:`RegistryError` (nothing changed) if the shop cannot run it. Products
        (titles, prices, new or removed SKUs) apply to the next request; lines already in
        carts keep the price they were added at. Only services whose entry changed are
        restarted. Address and prefix changes need a server restart and are reported.
        """
        problems = runnable_problems(registry)
        if problems:
            raise RegistryError(problems)
        return await self._switch(registry)

    async def _switch(self, registry: Registry) -> ReloadReport:
        async with self._reload_lock:
            old = self.registry
            restart_required = [
                f"{what} changed: restart the server to apply it"
                for what, before, after in [
                    ("http.service addr", old.http_service.addr, registry.http_service.addr),
                    ("http.router prefix", old.router.prefix, registry.router.prefix),
                    ("process.host workers", old.process_host.workers,
                     registry.process_host.workers),
                ]
                if before != after
            ]
            await self.store.add_products(registry.products)
            actor = registry.actor("cart")
            self.registry, self.catalog = registry, Catalog.from_registry(registry)
            if not self.fixed_cart_factory:
                self.cart_factory = resolve_callable(actor.handler)
            self.cart_mailbox = self.settings.mailbox_capacity or actor.mailbox

            before = {s.name: s for s in old.services}
            after = {s.name: s for s in registry.services}
            changed = sorted(n for n in before.keys() & after.keys() if before[n] != after[n])
            removed = sorted(before.keys() - after.keys())
            added = sorted(after.keys() - before.keys())
            for name in changed + removed:
                await self.stop_service(name)
            for name in changed + added:
                await self.start_service(after[name])
            report = ReloadReport(
                registry.version, len(self.catalog), changed, added, removed, restart_required
            )
            log_event(
                logger, "registry reloaded", version=registry.version,
                products=len(self.catalog), restarted=",".join(changed) or "-",
                started=",".join(added) or "-", stopped=",".join(removed) or "-",
            )
            return report


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
    problems = runnable_problems(registry)
    if problems:
        raise RegistryError(problems)
    actor = registry.actor("cart")
    factory: CartFactory = cart_factory or resolve_callable(actor.handler)
    # Trio runs actors on one thread; process.host workers bound the threads doing blocking
    # work (SQLite) so a burst of it cannot exhaust the thread pool.
    blocking = trio.CapacityLimiter(registry.process_host.workers)
    mailbox = settings.mailbox_capacity or actor.mailbox
    idle = settings.cart_idle_timeout
    async with open_store(
        settings.data_dir, registry.products, blocking, synchronous=settings.sqlite_synchronous
    ) as store, open_actor_host(
        mailbox_capacity=mailbox,
        max_actors=settings.max_live_carts,
        shutdown_timeout=settings.shutdown_timeout,
        # A cart is passivated between idle and idle + 10 % (at most 10 s) without mail.
        idle_check_interval=min(10.0, idle / 10) if idle else 10.0,
    ) as host:
        with open_event_bus(settings.bus_capacity) as bus:
            async with open_supervisor() as supervisor:
                shop = Shop(
                    registry, Catalog.from_registry(registry), settings, host, bus, store,
                    supervisor, factory, mailbox, blocking,
                    fixed_cart_factory=cart_factory is not None,
                )
                for service in registry.services:
                    await shop.start_service(service)
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
