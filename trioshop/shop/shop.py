"""The running shop: its registry and catalog, its carts and services, swapped by reloads."""

from __future__ import annotations

import logging

import attrs
import trio

from trioshop import events
from trioshop.config import Settings
from trioshop.logs import log_event
from trioshop.registry import Registry, resolve_callable
from trioshop.runtime import ActorHost, ActorInfo, BusStatistics, EventBus, HostStatistics
from trioshop.shop.cart_actor import OrderCounters
from trioshop.shop.cart_api import CartDefinition, CartFactory, Carts
from trioshop.shop.catalog import Catalog
from trioshop.shop.reload import ReloadReport, plan_reload
from trioshop.shop.runnable import CART_ACTOR, check_runnable, load_runnable_registry
from trioshop.shop.services import Services, ServiceStatistics
from trioshop.store import Store, StoreStatistics

logger = logging.getLogger("trioshop.shop")


@attrs.frozen
class ShopStatistics:
    """A snapshot of everything a running shop counts, for metrics and the admin view."""

    actors: HostStatistics
    bus: BusStatistics
    services: list[ServiceStatistics]
    store: StoreStatistics
    orders: OrderCounters


def cart_definition(
    registry: Registry, settings: Settings, factory: CartFactory | None = None
) -> CartDefinition:
    """How *registry* makes carts (*factory* overrides its handler; the settings its mailbox)."""
    actor = registry.actor(CART_ACTOR)
    return CartDefinition(
        factory or resolve_callable(actor.handler), settings.mailbox_capacity or actor.mailbox
    )


@attrs.define
class Shop:
    """What the HTTP layer talks to: ``carts`` for the cart API, the current ``catalog``,
    ``services``, read-only snapshots, and :meth:`reload`.

    Build it with :func:`trioshop.shop.assembly.open_shop`, which opens what it runs on.
    """

    registry: Registry
    catalog: Catalog
    carts: Carts
    services: Services
    _settings: Settings
    _host: ActorHost
    _bus: EventBus
    _store: Store
    _counters: OrderCounters
    _blocking: trio.CapacityLimiter
    _fixed_cart_factory: CartFactory | None = None  # given by the caller: survives reloads
    _reload_lock: trio.Lock = attrs.field(factory=trio.Lock)

    async def ready(self) -> None:
        """Return if this node can serve carts now (its store answers); ``StoreError`` if not."""
        await self._store.ping()

    async def stock_levels(self) -> dict[str, int]:
        """Live stock per SKU."""
        return await self._store.stock_levels()

    def live_actors(self, limit: int | None = None) -> list[ActorInfo]:
        """The live actors (at most *limit*), oldest first."""
        return self._host.live(limit)

    def statistics(self) -> ShopStatistics:
        """A snapshot of the actors, the bus, the services, the store and the orders."""
        return ShopStatistics(
            self._host.statistics(),
            self._bus.statistics(),
            self.services.statistics(),
            self._store.statistics(),
            attrs.evolve(self._counters),
        )

    # -- reloads ------------------------------------------------------------------------

    async def reload_from_disk(self) -> ReloadReport:
        """Re-read and check the registry folder in a worker thread, then switch to it.

        Reading files and importing the modules it names is blocking work, hence the thread.
        Raises ``RegistryError`` (nothing changed) as :meth:`reload` does.
        """
        registry = await trio.to_thread.run_sync(
            load_runnable_registry, self.registry.folder, limiter=self._blocking
        )
        return await self._switch(registry)

    async def reload(self, registry: Registry) -> ReloadReport:
        """Switch to *registry*: validated whole first, then swapped in one step.

        Raises ``RegistryError`` (nothing changed) if the shop cannot run it. Products
        (titles, prices, new or removed SKUs) apply to the next request; lines already in
        carts keep the price they were added at. Only services whose entry changed are
        restarted. Address and prefix changes need a server restart and are reported.
        """
        return await self._switch(check_runnable(registry))

    async def _switch(self, registry: Registry) -> ReloadReport:
        async with self._reload_lock:
            plan = plan_reload(self.registry, registry, self._settings)
            await self._store.add_stock(registry.initial_stock)
            definition = cart_definition(registry, self._settings, self._fixed_cart_factory)
            self.registry, self.catalog = registry, Catalog.from_registry(registry)
            self.carts.definition = definition
            services = {s.name: s for s in registry.services}
            for name in plan.restart:
                await self.services.stop(name)
            for name in plan.stop:
                await self.services.remove(name)
            for name in plan.restart + plan.start:
                await self.services.start(services[name])
            log_event(
                logger, events.REGISTRY_RELOADED, version=registry.version,
                products=len(self.catalog), restarted=",".join(plan.restart) or "-",
                started=",".join(plan.start) or "-", stopped=",".join(plan.stop) or "-",
            )
            return ReloadReport(
                registry.version, len(self.catalog), plan.restart, plan.start, plan.stop,
                plan.restart_required,
            )
