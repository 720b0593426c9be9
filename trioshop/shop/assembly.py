"""Opening a shop: the store, the actor host, the bus and the services, in shutdown order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio

from trioshop import events
from trioshop.config import Settings
from trioshop.logs import log_event
from trioshop.registry import Registry
from trioshop.runtime import open_actor_host, open_event_bus, open_supervisor
from trioshop.shop.cart_actor import CartDeps, OrderCounters
from trioshop.shop.cart_api import CartFactory, Carts
from trioshop.shop.catalog import Catalog
from trioshop.shop.runnable import check_runnable
from trioshop.shop.services import Services
from trioshop.shop.shop import Shop, cart_definition
from trioshop.store import open_store

logger = logging.getLogger("trioshop.shop")


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
    is the shutdown order. Raises ``RegistryError`` if the shop cannot run *registry*.
    *cart_factory* replaces the registry's cart handler (tests), also across reloads.
    """
    check_runnable(registry)
    definition = cart_definition(registry, settings, cart_factory)
    # Trio runs actors on one thread; process.host workers bound the threads doing blocking
    # work (SQLite) so a burst of it cannot exhaust the thread pool.
    blocking = trio.CapacityLimiter(registry.process_host.workers)
    idle = settings.cart_idle_timeout
    initial_stock = registry.initial_stock
    async with open_store(
        settings.data_dir, initial_stock, blocking, synchronous=settings.sqlite_synchronous,
        database_url=settings.database_url, pool_size=settings.database_pool_size,
        claim_seconds=settings.outbox_claim_timeout,
    ) as store, open_actor_host(
        mailbox_capacity=definition.mailbox,
        max_actors=settings.max_live_carts,
        shutdown_timeout=settings.shutdown_timeout,
        # A cart is passivated between idle and idle + 10 % (at most 10 s) without mail.
        idle_check_interval=min(10.0, idle / 10) if idle else 10.0,
    ) as host:
        with open_event_bus(settings.bus_capacity) as bus:
            async with open_supervisor() as supervisor:
                counters = OrderCounters()
                carts = Carts(host, store, CartDeps(bus, store, counters), settings, definition)
                services = Services(supervisor, bus, store, settings)
                shop = Shop(
                    registry, Catalog.from_registry(registry), carts, services, settings,
                    host, bus, store, counters, blocking, cart_factory,
                )
                await services.start_all(registry.services)
                log_event(
                    logger, events.SHOP_STARTED, products=len(shop.catalog),
                    services=",".join(services.names), store=_describe(settings),
                )
                yield shop
                log_event(logger, "shop stopping", live_carts=len(host))


def _describe(settings: Settings) -> str:
    """Which store the shop runs on, for the log (a database URL without its password)."""
    if settings.database_url is not None:
        parts = urlsplit(settings.database_url)
        return f"postgresql://{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
    return settings.data_dir or "memory"


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
