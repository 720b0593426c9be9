"""Durable state: carts, live stock, orders, the order outbox and service delivery cursors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from trioshop.runtime import open_service_nursery
from trioshop.store.base import (
    CartConflict,
    CartWrite,
    FailureKind,
    OperationAbandoned,
    OutboxEntry,
    OutcomeUnknown,
    Store,
    StoreClosed,
    StoredCart,
    StoredOrder,
    StoreError,
    StoreStatistics,
)
from trioshop.store.memory import MemoryStore
from trioshop.store.postgres import (
    CLAIM_SECONDS,
    POOL_SIZE,
    PostgresStore,
    open_postgres_store,
)
from trioshop.store.pruning import prune_add_keys_periodically
from trioshop.store.sqlite import DATABASE_FILE, SqliteStore


@asynccontextmanager
async def open_store(
    data_dir: str | Path | None,
    initial_stock: Mapping[str, int],
    limiter: trio.CapacityLimiter,
    *,
    synchronous: str = "FULL",
    database_url: str | None = None,
    pool_size: int = POOL_SIZE,
    claim_seconds: float = CLAIM_SECONDS,
) -> AsyncIterator[Store]:
    """The store, ready, with *initial_stock* seeded: PostgreSQL at *database_url* if given,
    else SQLite in *data_dir*, else (``None``) in memory (see :func:`_open_backend`).

    While the block runs, add keys past their retention are pruned every
    ``ADD_KEY_PRUNE_SECONDS``; the pruning stops before the store closes.
    """
    async with _open_backend(
        data_dir, initial_stock, limiter, synchronous=synchronous, database_url=database_url,
        pool_size=pool_size, claim_seconds=claim_seconds,
    ) as store, open_service_nursery() as nursery:
        nursery.start_soon(prune_add_keys_periodically, store)
        yield store


@asynccontextmanager
async def _open_backend(
    data_dir: str | Path | None,
    initial_stock: Mapping[str, int],
    limiter: trio.CapacityLimiter,
    *,
    synchronous: str,
    database_url: str | None,
    pool_size: int,
    claim_seconds: float,
) -> AsyncIterator[Store]:
    """The store of :func:`open_store`, ready, without its pruning.

    For SQLite the writer task runs in this block's nursery; leaving the block lets it
    answer every queued operation, then closes the database. PostgreSQL uses a pool of
    *pool_size* connections and as many worker threads (*limiter* is SQLite's); an order a
    dead node claimed goes to another node after *claim_seconds*.
    """
    if database_url is not None:
        async with open_postgres_store(
            database_url, initial_stock, pool_size=pool_size, claim_seconds=claim_seconds
        ) as postgres_store:
            yield postgres_store
        return
    if data_dir is None:
        store = MemoryStore()
        await store.add_stock(initial_stock)
        yield store
        return
    sqlite_store = SqliteStore(Path(data_dir) / DATABASE_FILE, limiter, synchronous)
    # Not cancelled on exit: the writer answers what is queued, then closes the database.
    async with open_service_nursery(cancel_on_exit=False) as nursery:
        await nursery.start(sqlite_store.run, initial_stock)
        try:
            yield sqlite_store
        finally:
            sqlite_store.close()


__all__ = [
    "CartConflict",
    "CartWrite",
    "FailureKind",
    "MemoryStore",
    "OperationAbandoned",
    "OutboxEntry",
    "OutcomeUnknown",
    "PostgresStore",
    "SqliteStore",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreStatistics",
    "StoredCart",
    "StoredOrder",
    "open_store",
]
