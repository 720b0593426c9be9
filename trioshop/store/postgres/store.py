"""The PostgreSQL store's operations: carts, stock, orders and the outbox, each one
transaction of the node's pool, on a database many nodes share."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import ClassVar

import attrs
import psycopg
import trio

from trioshop.domain import CartLine, Order, Placement, quantities, replay
from trioshop.logs import log_event
from trioshop.runtime import Ticket, open_service_nursery, thread_deadline
from trioshop.store.base import (
    ADD_KEY_RETENTION_SECONDS,
    CartConflict,
    CartWrite,
    OutboxEntry,
    Store,
    StoredCart,
    StoredOrder,
    StoreError,
    StoreStatistics,
)
from trioshop.store.codec import decode_lines, encode_lines
from trioshop.store.postgres.errors import transaction
from trioshop.store.postgres.gates import cart_row
from trioshop.store.postgres.listener import OUTBOX_CHANNEL, OutboxListener
from trioshop.store.postgres.pool import POOL_SIZE, Database
from trioshop.store.postgres.sql import (
    CLAIM_OUTBOX,
    KEY_CONSTRAINT,
    WITH_OUTCOMES,
    Connection,
    delete_old_add_keys,
    order_by_key,
    order_of,
    seed_stock,
    stored_cart,
    take_stock,
    with_outcomes,
)
from trioshop.store.postgres.writes import CartWrites, apply_writes

logger = logging.getLogger("trioshop.store")

# How long an outbox entry handed out by pending() stays claimed by this node.
CLAIM_SECONDS = 30.0


@attrs.define
class PostgresStore(Store):
    """A PostgreSQL database (schema chosen by the URL's search_path) shared by many nodes.

    Every operation is one transaction on a connection of the node's pool of ``pool_size``
    (see :class:`~trioshop.store.postgres.pool.Database`); cart writes and views' version
    checks go in batches (see
    :class:`~trioshop.store.postgres.writes.CartWrites`). Nothing is cached: carts are
    written conditional on their version, stock is taken by conditional decrements, and the
    outbox has one row per order and registered service, claimed by ``pending`` for
    ``claim_seconds``. A dedicated connection LISTENs for the checkouts of every node.

    Use :func:`open_postgres_store`, or ``await nursery.start(store.run, initial_stock)``.
    """

    # A look claims its entries for claim_seconds: a small batch is handled well within it,
    # so no live node's claim runs out under another's.
    outbox_batch: ClassVar[int] = 10
    # Should a wake-up from another node be lost (LISTEN/NOTIFY is best effort across
    # reconnects), services look at the outbox this often all the same.
    outbox_poll_seconds: ClassVar[float] = 5.0

    url: str
    pool_size: int = POOL_SIZE
    claim_seconds: float = CLAIM_SECONDS
    _db: Database = attrs.field(init=False, repr=False)
    _carts: CartWrites = attrs.field(init=False, repr=False)
    _listener: OutboxListener = attrs.field(init=False, repr=False)
    # The services this node queues its orders for (register_service, unregister_service).
    _services: set[str] = attrs.field(factory=set, init=False)

    @_db.default
    def _database(self) -> Database:
        return Database(self.url, self.pool_size)

    @_carts.default
    def _cart_writes(self) -> CartWrites:
        return CartWrites(self._db)

    @_listener.default
    def _outbox_listener(self) -> OutboxListener:
        return OutboxListener(self.url)

    @property
    def outbox_claim_seconds(self) -> float:  # type: ignore[override]
        return self.claim_seconds

    @property
    def writers(self) -> trio.CapacityLimiter:
        """A token per connection a write may hold (the pool's, but the reads' reserve)."""
        return self._db.gates.writers

    async def run(
        self,
        initial: Mapping[str, int],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect, migrate, seed *initial* stock, then listen for outbox news until cancelled.

        Ready (``task_status.started()``) once the schema is migrated, the stock seeded, the
        pool open and the listener LISTENing. Raises :class:`StoreError` with a one-line
        reason naming the database if it cannot get there. Cancel it to close the store:
        the listener stops and the pool is closed (operations then raise StoreClosed).
        """
        async with self._db.opened(initial) as version:
            listener = await self._listener.connect()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listener.listen, listener)
                await nursery.start(self._carts.run)
                log_event(
                    logger, "store opened", database=self._db.where, schema_version=version,
                    pool_size=self.pool_size,
                )
                task_status.started()

    async def wait_for_outbox(self) -> None:
        """Return at the next notification of a checkout that queued orders, on any node."""
        await self._listener.wait()

    # -- carts ----------------------------------------------------------------------------

    async def load_cart(self, user_id: str) -> StoredCart:
        return await self._db.run(lambda conn: stored_cart(conn, user_id))

    async def cart_version(self, user_id: str) -> int:
        return await self._carts.version(user_id)

    async def changed_elsewhere(self, user_id: str, version: int) -> bool:
        return await self.cart_version(user_id) != version

    async def has_cart(self, user_id: str) -> bool:
        def read(conn: Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM carts WHERE user_id = %s AND lines <> '[]'::jsonb", (user_id,)
            ).fetchone()
            return row is not None

        return await self._db.run(read)

    async def save_cart(self, write: CartWrite, *, ticket: Ticket | None = None) -> int:
        return await self._carts.save(write, ticket)

    async def added_with_key(self, user_id: str, key: str) -> CartLine | None:
        def read(conn: Connection) -> CartLine | None:
            row = conn.execute(
                "SELECT line::text FROM add_keys WHERE user_id = %s AND key = %s "
                "AND created_at > now() - make_interval(secs => %s)",
                (user_id, key, float(ADD_KEY_RETENTION_SECONDS)),
            ).fetchone()
            return None if row is None else decode_lines(row[0])[0]

        return await self._db.run(read)

    # -- stock ----------------------------------------------------------------------------

    async def stock_levels(self) -> dict[str, int]:
        def read(conn: Connection) -> dict[str, int]:
            rows = conn.execute("SELECT sku, available FROM stock ORDER BY sku").fetchall()
            return {sku: int(available) for sku, available in rows}

        return await self._db.run(read)

    async def add_stock(self, initial: Mapping[str, int]) -> None:
        def seed(conn: Connection) -> None:
            seed_stock(conn, initial)

        await self._db.run(seed, writes=1)

    # -- orders ---------------------------------------------------------------------------

    async def checkout(
        self,
        order: Order,
        *,
        version: int,
        ticket: Ticket | None = None,
        trace_parent: str | None = None,
    ) -> Placement:
        key = order.idempotency_key
        services = sorted(self._services)  # as registered when the checkout starts
        until = thread_deadline(math.inf if ticket is None else ticket.deadline)

        def replayed(conn: Connection) -> Placement | None:
            earlier = None if key is None else replay(order_by_key(conn, key), order.user_id)
            return None if earlier is None else Placement(earlier, replayed=True)

        def place(conn: Connection) -> Placement:
            try:
                with transaction(conn):
                    if (placement := replayed(conn)) is not None:
                        return placement
                    emptied = CartWrite(user_id=order.user_id, lines=(), version=version)
                    try:
                        apply_writes(conn, [emptied])[0].unwrap()
                    except CartConflict:
                        # We waited for the cart's other writer: if it was this key's
                        # checkout, answer as if it had come first (a statement sees it now).
                        if (placement := replayed(conn)) is not None:
                            return placement
                        raise
                    take_stock(conn, order, until)
                    conn.execute(
                        "INSERT INTO orders (order_id, user_id, lines, total_cents, created_at,"
                        " idempotency_key, trace_parent) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (order.order_id, order.user_id, encode_lines(order.lines),
                         order.total_cents, order.timestamp, key, trace_parent),
                    )
                    queued = conn.execute(
                        "INSERT INTO outbox (order_id, service, user_id) "
                        "SELECT %s, unnest(%s::text[]), %s",
                        (order.order_id, services, order.user_id),
                    ).rowcount
                    if queued:
                        conn.execute("SELECT pg_notify(%s, %s)", (OUTBOX_CHANNEL, order.order_id))
                    return Placement(order)
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != KEY_CONSTRAINT:
                    raise
            # Another checkout with this key committed while ours ran: ours is rolled back.
            placement = replayed(conn)
            if placement is None:
                raise StoreError("the checkout's idempotency key is in use; retry")
            return placement

        rows = [cart_row(order.user_id), *(f"stock:{sku}" for sku in quantities(order.lines))]
        return await self._db.run(place, ticket=ticket, writes=1, rows=rows)

    async def order(self, order_id: str) -> StoredOrder | None:
        def read(conn: Connection) -> StoredOrder | None:
            rows = conn.execute(
                f"{WITH_OUTCOMES} WHERE o.order_id = %s ORDER BY b.service", (order_id,)
            ).fetchall()
            found = with_outcomes(rows)
            return found[0] if found else None

        return await self._db.run(read)

    async def orders_for(self, user_id: str) -> list[StoredOrder]:
        def read(conn: Connection) -> list[StoredOrder]:
            rows = conn.execute(
                f"{WITH_OUTCOMES} WHERE o.user_id = %s "
                "ORDER BY o.created_at DESC, o.placed DESC, b.service",
                (user_id,),
            ).fetchall()
            return with_outcomes(rows)

        return await self._db.run(read)

    async def order_by_key(self, idempotency_key: str) -> Order | None:
        return await self._db.run(lambda conn: order_by_key(conn, idempotency_key))

    # -- the outbox -----------------------------------------------------------------------

    async def register_service(self, service: str) -> None:
        """Queue every order this node places from now on for *service* too (the services
        table lists every service any node ran, for operators)."""

        def register(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO services (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                (service,),
            )

        await self._db.run(register, writes=1)
        self._services.add(service)

    async def unregister_service(self, service: str) -> None:
        """Queue no more of this node's orders for *service*; what is queued stays for the
        nodes still running it."""
        self._services.discard(service)

    async def keep_services(self, services: Collection[str]) -> list[str]:
        """Unregister here the services not in *services* (other nodes are left alone)."""
        gone = sorted(self._services - set(services))
        self._services.difference_update(gone)
        return gone

    async def prune_add_keys(self, retention: float = ADD_KEY_RETENTION_SECONDS) -> int:
        return await self._db.run(lambda conn: delete_old_add_keys(conn, retention), writes=1)

    async def pending(self, service: str, limit: int = 100) -> list[OutboxEntry]:
        """Claim up to *limit* of *service*'s unacknowledged entries no node holds a claim on,
        each user's in order (see :data:`~trioshop.store.postgres.sql.CLAIM_OUTBOX`).

        Claimed for ``claim_seconds``: no other node (nor this one) gets them meanwhile, nor
        any later entry of the same users; a claim that runs out unacknowledged (its node
        died) lets them be claimed again, oldest first.
        """

        def claim(conn: Connection) -> list[OutboxEntry]:
            rows = conn.execute(
                CLAIM_OUTBOX,
                {"seconds": self.claim_seconds, "service": service, "limit": limit},
            ).fetchall()
            return [OutboxEntry(row[0], order_of(row[2:]), row[1]) for row in rows]

        return await self._db.run(claim, writes=1)

    async def ack(self, service: str, entry: OutboxEntry, status: str) -> None:
        """Record *status* unless the entry already has one (a second ack changes nothing)."""

        def record(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO outbox (order_id, service, user_id, status, at) "
                "VALUES (%s, %s, %s, %s, now()) "
                "ON CONFLICT (order_id, service) DO UPDATE "
                "SET status = excluded.status, at = excluded.at WHERE outbox.status IS NULL",
                (entry.order.order_id, service, entry.order.user_id, status),
            )

        await self._db.run(record, writes=1)

    # -- the store itself -----------------------------------------------------------------

    async def ping(self) -> None:
        await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone())

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(self._db.transactions, self._db.operations)


@asynccontextmanager
async def open_postgres_store(
    url: str,
    initial_stock: Mapping[str, int],
    *,
    pool_size: int = POOL_SIZE,
    claim_seconds: float = CLAIM_SECONDS,
) -> AsyncIterator[PostgresStore]:
    """The store on the database (and schema) of *url*, ready, with *initial_stock* seeded.

    Migrates the schema (once, however many nodes start together), gives SKUs it has never
    seen their initial stock, opens a pool of *pool_size* connections and starts the outbox
    listener in this block's nursery. Raises :class:`StoreError` with a one-line reason
    naming the database when it cannot connect. Leaving the block stops the listener and
    closes the pool. An outbox entry a node claimed but never acknowledged (the node died)
    is handed to another node after *claim_seconds*.
    """
    store = PostgresStore(url, pool_size, claim_seconds)
    async with open_service_nursery() as nursery:
        await nursery.start(store.run, initial_stock)
        yield store
