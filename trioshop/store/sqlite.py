"""The SQLite store: one writer task batches every change into transactions; reads go beside."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import outcome
import trio

from trioshop.domain import (
    CartLine,
    DomainError,
    Order,
    Placement,
    replay,
    reserve_stock,
)
from trioshop.logs import log_event
from trioshop.runtime import Ticket
from trioshop.store.base import (
    ADD_KEY_RETENTION_SECONDS,
    CartConflict,
    CartWrite,
    OutboxEntry,
    Store,
    StoreClosed,
    StoredCart,
    StoredOrder,
    StoreError,
    StoreStatistics,
    unexpected,
)
from trioshop.store.batch import Batcher, Outcome
from trioshop.store.codec import encode_lines
from trioshop.store.migrations import migrate
from trioshop.store.sqlite_sql import (
    added_with_key,
    order_by_key,
    order_from_row,
    prune_add_keys,
    service_outcomes,
    stock_of,
    stored_cart,
    write_cart,
)

logger = logging.getLogger("trioshop.store")

T = TypeVar("T")
# An operation: runs in the writer's thread inside the batch's transaction.
Operation = Callable[[sqlite3.Connection], Any]
# A change as the writer gets it: the operation, and what to do on the Trio thread once it
# has committed (mirror the stock).
Change = tuple[Operation, Callable[[Any], None] | None]

DATABASE_FILE = "trioshop.sqlite3"


@attrs.define
class SqliteStore(Store):
    """A SQLite database in WAL mode: one writer task for every change, a read connection beside.

    Callers submit changes to a :class:`~trioshop.store.batch.Batcher`; it hands every change
    waiting to the writer, which runs them in one transaction on a worker thread (through
    ``limiter``) and commits once: group commit, one fsync for many carts. An operation that
    refuses (``InsufficientStock``...) is rolled back to its savepoint alone. Reads run on
    their own connection (WAL lets them see every committed change without waiting for the
    writer), one at a time, also in a worker thread.
    """

    path: Path
    limiter: trio.CapacityLimiter
    synchronous: str = "FULL"
    _operations: int = attrs.field(default=0, init=False)
    _writes: Batcher[Change] = attrs.field(init=False)
    _conn: sqlite3.Connection | None = attrs.field(default=None, init=False)
    # Reads use a connection of their own: under WAL they see every committed write and
    # never wait behind a batch of writes (one read at a time, in a worker thread).
    _reader: sqlite3.Connection | None = attrs.field(default=None, init=False)
    _read_lock: trio.Lock = attrs.field(factory=trio.Lock, init=False)
    # Live stock per SKU, mirrored after each commit: only this process writes (exclusive).
    _stock: dict[str, int] = attrs.field(factory=dict, init=False)

    @_writes.default
    def _writer(self) -> Batcher[Change]:
        return Batcher(self._commit, kind="sqlite", operation="changes")

    # -- the writer ---------------------------------------------------------------------

    def _open(self, initial: Mapping[str, int]) -> tuple[dict[str, int], int, int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        version = migrate(conn)
        self._conn = conn
        reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        reader.row_factory = sqlite3.Row
        reader.execute("PRAGMA query_only=ON")
        self._reader = reader
        self._seed_stock(conn, initial)
        prune_add_keys(conn, ADD_KEY_RETENTION_SECONDS)
        stock = {r["sku"]: r["available"] for r in conn.execute("SELECT sku, available FROM stock")}
        carts = conn.execute("SELECT count(*) FROM carts WHERE lines != '[]'").fetchone()[0]
        return stock, carts, version

    @staticmethod
    def _seed_stock(conn: sqlite3.Connection, initial: Mapping[str, int]) -> None:
        conn.executemany(
            "INSERT OR IGNORE INTO stock (sku, available) VALUES (?, ?)", initial.items()
        )

    def _apply(self, batch: list[Change]) -> list[Outcome]:
        """Run *batch* in one transaction; every operation gets its own outcome.

        A refusal (a domain error, a constraint) or any unexpected exception in one operation
        rolls back that operation alone; the others commit. Trouble with the database itself
        (locked, I/O) fails the whole batch, which is then rolled back.
        """
        conn = self._conn
        assert conn is not None
        outcomes: list[Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for operation, _ in batch:
                conn.execute("SAVEPOINT op")
                try:
                    outcomes.append(outcome.Value(operation(conn)))
                except (DomainError, CartConflict, sqlite3.IntegrityError) as refusal:
                    conn.execute("ROLLBACK TO op")
                    outcomes.append(outcome.Error(refusal))
                except sqlite3.OperationalError:
                    raise  # the database itself is in trouble: the batch fails
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    outcomes.append(outcome.Error(unexpected(exc)))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            error = StoreError(f"the database refused the write ({exc}); retry later")
            return [outcome.Error(error) for _ in batch]
        return outcomes

    async def run(
        self,
        initial: Mapping[str, int],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Open the database, migrate, seed *initial* stock, then serve operations until closed.

        Ready (``task_status.started()``) once the live stock is loaded. Ends when
        :meth:`close` was called and every queued operation has been answered.
        """
        stock, carts, version = await trio.to_thread.run_sync(
            self._open, initial, limiter=self.limiter
        )
        self._stock.update(stock)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._writes.run)
                log_event(logger, "store opened", path=str(self.path), schema_version=version,
                          carts=carts)
                task_status.started()
        finally:
            # Cancelled with the rest of the shop, a read may still run in its thread: closing
            # its connection under it would crash the process. Reads are short; wait for them.
            with trio.CancelScope(shield=True):
                async with self._read_lock:
                    for conn in (self._conn, self._reader):
                        if conn is not None:
                            conn.close()
                    self._conn = self._reader = None

    async def _commit(self, batch: list[Change]) -> list[Outcome]:
        """Run *batch* in one transaction in a worker thread, then mirror what committed."""
        outcomes = await trio.to_thread.run_sync(self._apply, batch, limiter=self.limiter)
        self._operations += len(batch)
        for (_, on_commit), result in zip(batch, outcomes, strict=True):
            if isinstance(result, outcome.Value) and on_commit is not None:
                try:
                    on_commit(result.value)
                except Exception as exc:  # committed: the caller still hears so
                    unexpected(exc)
        return outcomes

    def close(self) -> None:
        """Stop accepting operations; the writer finishes the queued ones, then ends."""
        self._writes.close()

    async def _submit(
        self, operation: Callable[[sqlite3.Connection], T],
        on_commit: Callable[[T], None] | None = None,
        ticket: Ticket | None = None,
    ) -> T:
        return await self._writes.submit((operation, on_commit), ticket)  # type: ignore[no-any-return]

    def _run_read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        reader = self._reader
        assert reader is not None
        reader.execute("BEGIN")  # one snapshot for a read of several statements
        try:
            return query(reader)
        finally:
            reader.execute("COMMIT")

    async def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run *query* on the read connection in a worker thread; sees every acknowledged write."""
        async with self._read_lock:
            if self._reader is None:
                raise StoreClosed("the store is not open")
            try:
                return await trio.to_thread.run_sync(self._run_read, query, limiter=self.limiter)
            except sqlite3.Error as exc:
                raise StoreError(f"the database refused the read ({exc}); retry later") from exc
            except Exception as exc:
                raise unexpected(exc) from exc

    # -- operations ---------------------------------------------------------------------

    async def load_cart(self, user_id: str) -> StoredCart:
        return await self._read(lambda conn: stored_cart(conn, user_id))

    async def cart_version(self, user_id: str) -> int:
        return (await self.load_cart(user_id)).version

    async def has_cart(self, user_id: str) -> bool:
        def read(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM carts WHERE user_id = ? AND lines != '[]'", (user_id,)
            ).fetchone()
            return row is not None

        return await self._read(read)

    async def save_cart(self, write: CartWrite, *, ticket: Ticket | None = None) -> int:
        return await self._submit(lambda conn: write_cart(conn, write), None, ticket)

    async def added_with_key(self, user_id: str, key: str) -> CartLine | None:
        return await self._read(lambda conn: added_with_key(conn, user_id, key))

    async def checkout(
        self,
        order: Order,
        *,
        version: int,
        ticket: Ticket | None = None,
        trace_parent: str | None = None,
    ) -> Placement:
        def place(conn: sqlite3.Connection) -> tuple[Placement, dict[str, int]]:
            key = order.idempotency_key
            if key is not None:
                earlier = replay(order_by_key(conn, key), order.user_id)
                if earlier is not None:
                    return Placement(earlier, replayed=True), {}
            write_cart(conn, CartWrite(user_id=order.user_id, lines=(), version=version))
            skus = sorted({line.sku for line in order.lines})
            levels = reserve_stock(order.lines, stock_of(conn, skus))
            conn.executemany(
                "UPDATE stock SET available = ? WHERE sku = ?",
                [(left, sku) for sku, left in levels.items()],
            )
            conn.execute(
                "INSERT INTO orders (order_id, user_id, lines, total_cents, created_at,"
                " idempotency_key, trace_parent) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (order.order_id, order.user_id, encode_lines(order.lines), order.total_cents,
                 order.timestamp, key, trace_parent),
            )
            conn.execute(
                "INSERT INTO outbox (order_id, created_at) VALUES (?, ?)",
                (order.order_id, time.time()),
            )
            return Placement(order), levels

        def committed(result: tuple[Placement, dict[str, int]]) -> None:
            self._stock.update(result[1])

        placement, _ = await self._submit(place, committed, ticket)
        return placement

    async def stock_levels(self) -> dict[str, int]:
        return dict(self._stock)

    async def order(self, order_id: str) -> StoredOrder | None:
        def read(conn: sqlite3.Connection) -> StoredOrder | None:
            row = conn.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
            if row is None:
                return None
            return StoredOrder(order_from_row(row), service_outcomes(conn, order_id))

        return await self._read(read)

    async def orders_for(self, user_id: str) -> list[StoredOrder]:
        def read(conn: sqlite3.Connection) -> list[StoredOrder]:
            rows = conn.execute(
                "SELECT * FROM orders WHERE user_id = ? ORDER BY created_at DESC, rowid DESC",
                (user_id,),
            ).fetchall()
            return [
                StoredOrder(order_from_row(r), service_outcomes(conn, r["order_id"])) for r in rows
            ]

        return await self._read(read)

    async def order_by_key(self, idempotency_key: str) -> Order | None:
        return await self._read(lambda conn: order_by_key(conn, idempotency_key))

    async def pending(self, service: str, limit: int = 100) -> list[OutboxEntry]:
        def read(conn: sqlite3.Connection) -> list[OutboxEntry]:
            rows = conn.execute(
                "SELECT outbox.seq, orders.* FROM outbox JOIN orders USING (order_id) "
                "WHERE outbox.seq > COALESCE("
                "  (SELECT last_seq FROM service_cursors WHERE service = ?), 0) "
                "ORDER BY outbox.seq LIMIT ?",
                (service, limit),
            ).fetchall()
            return [OutboxEntry(r["seq"], order_from_row(r), r["trace_parent"]) for r in rows]

        return await self._read(read)

    async def register_service(self, service: str) -> None:
        def register(conn: sqlite3.Connection) -> None:
            conn.execute(  # a new service's cursor starts at the newest order: no backlog
                "INSERT INTO service_cursors (service, last_seq) "
                "SELECT ?, COALESCE(MAX(seq), 0) FROM outbox WHERE true "
                "ON CONFLICT (service) DO NOTHING",
                (service,),
            )

        await self._submit(register)

    async def unregister_service(self, service: str) -> None:
        await self._submit(
            lambda conn: conn.execute("DELETE FROM service_cursors WHERE service = ?", (service,))
        )

    async def keep_services(self, services: Collection[str]) -> list[str]:
        def forget(conn: sqlite3.Connection) -> list[str]:
            known = [r["service"] for r in conn.execute("SELECT service FROM service_cursors")]
            gone = sorted(set(known) - set(services))
            conn.executemany(
                "DELETE FROM service_cursors WHERE service = ?", [(s,) for s in gone]
            )
            return gone

        return await self._submit(forget)

    async def prune_add_keys(self, retention: float = ADD_KEY_RETENTION_SECONDS) -> int:
        return await self._submit(lambda conn: prune_add_keys(conn, retention))

    async def ack(self, service: str, entry: OutboxEntry, status: str) -> None:
        seq, order_id = entry.seq, entry.order.order_id

        def record(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO service_cursors (service, last_seq) VALUES (?, ?) "
                "ON CONFLICT (service) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
                (service, seq),
            )
            conn.execute(
                "INSERT OR REPLACE INTO order_status (order_id, service, status, at) "
                "VALUES (?, ?, ?, ?)",
                (order_id, service, status, time.time()),
            )

        await self._submit(record)

    async def add_stock(self, initial: Mapping[str, int]) -> None:
        skus = list(initial)

        def seed(conn: sqlite3.Connection) -> dict[str, int]:
            self._seed_stock(conn, initial)
            return stock_of(conn, skus)

        await self._submit(seed, self._stock.update)

    async def ping(self) -> None:
        if not self._writes.running:
            raise StoreClosed("the store is not open")
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(self._writes.batches, self._operations)
