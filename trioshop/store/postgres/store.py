"""The PostgreSQL store: one database shared by many trioshop nodes, each change one transaction."""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, ClassVar, TypeVar

import attrs
import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from trioshop.domain import (
    CartLine,
    DomainError,
    Order,
    Placement,
    ServiceOutcome,
    check_stock,
    quantities,
    replay,
)
from trioshop.logs import log_event
from trioshop.runtime import Ticket, open_service_nursery
from trioshop.store.base import (
    ADD_KEY_RETENTION_SECONDS,
    NO_CART,
    CartConflict,
    OutboxEntry,
    OutcomeUnknown,
    Store,
    StoreClosed,
    StoredCart,
    StoredOrder,
    StoreError,
    StoreStatistics,
    claim,
    unexpected,
)
from trioshop.store.batch import Batcher, Outcome
from trioshop.store.codec import EMPTY_LINES, decode_lines, encode_lines
from trioshop.store.postgres.gates import Gates
from trioshop.store.postgres.schema import migrate

logger = logging.getLogger("trioshop.store")

T = TypeVar("T")
Connection = psycopg.Connection[Any]
Row = tuple[Any, ...]

# Every checkout that queues an order notifies this channel; each node's listener wakes its
# services' outbox loops (which also poll, so a lost notification costs latency only).
OUTBOX_CHANNEL = "trioshop_outbox"
# libpq's connect_timeout (whole seconds), and how long an operation waits for a pooled
# connection (the pool reconnects meanwhile) before it is a StoreError.
CONNECT_TIMEOUT = 5
# How long an operation waits for a pooled connection: below the requests' deadlines, so
# that a database that is down answers "storage unavailable, retry" (503), not a timeout.
POOL_TIMEOUT = 1.0
# How long an outbox entry handed out by pending() stays claimed by this node.
CLAIM_SECONDS = 30.0
# Connections (and worker threads) of one node's pool, unless told otherwise.
POOL_SIZE = 8
# The outbox listener's reconnection delays: doubling from the first to the last.
LISTEN_BACKOFF = (0.1, 10.0)
# The listen connection notices a dead server or network within about a minute.
KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 3}
# A conditional decrement that failed while the figure read just after suffices: the stock
# rose in between; try again this many times in all.
STOCK_ATTEMPTS = 3
# The first key of the advisory locks a batch of cart writes takes, one a user (the second
# key is a hash of the user id), in key order: two nodes' batches never deadlock.
CART_LOCK = 0x63617274  # "cart"
# How long any statement waits for a row or advisory lock (another node's batch, or a
# transaction left open on a cart's or a SKU's row), or until its request's deadline (its
# ticket's) if that is nearer, before its operation fails with a StoreError (503): one stuck
# row costs its own requests only, well within their deadlines (Settings.read_timeout, 3 s;
# checkout_timeout, 5 s). A batch of cart writes that waited this long is split and each
# write waits alone.
LOCK_TIMEOUT = 1.0
# How long any statement of a pooled connection may run, lock waits included: a store
# operation made without a deadline of its own is bounded too, below the requests' deadlines.
STATEMENT_TIMEOUT = 2.0
_LOCK_BOUND = f"{round(LOCK_TIMEOUT * 1000)}ms"
# After a lock timeout alone, a user's cart writes skip the batches (each goes alone, beside
# them) for this long: a stuck cart never again holds up the other carts' batches.
STUCK_SECONDS = 10.0
# The most users remembered as stuck at once (the oldest are forgotten first).
STUCK_MAX = 1000
# Old add keys deleted a statement (a statement must end within STATEMENT_TIMEOUT).
PRUNE_CHUNK = 10_000
# The name the store's sessions show in pg_stat_activity, unless the URL names one.
APPLICATION_NAME = "trioshop"

_RETENTION = float(ADD_KEY_RETENTION_SECONDS)
_KEY_CONSTRAINT = "orders_idempotency_key"
_ORDER_COLUMNS = (
    "o.order_id, o.user_id, o.lines::text, o.total_cents, o.created_at, o.idempotency_key"
)
_WITH_OUTCOMES = (
    f"SELECT {_ORDER_COLUMNS}, b.service, b.status, extract(epoch FROM b.at)::float8 "
    "FROM orders o LEFT JOIN outbox b ON b.order_id = o.order_id AND b.status IS NOT NULL "
)


def _reason(exc: BaseException) -> str:
    """The first line of *exc*'s message (libpq adds hints on further lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def _where(url: str) -> str:
    """``host:port/database`` of *url*, for messages (never the password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "(an unreadable database URL)"
    host = params.get("host") or "localhost"
    port = params.get("port") or 5432
    database = params.get("dbname") or params.get("user") or "?"
    return f"{host}:{port}/{database}"


def _order(row: Row) -> Order:
    return Order(row[0], row[1], decode_lines(row[2]), row[3], row[4], row[5])


def _with_outcomes(rows: list[Row]) -> list[StoredOrder]:
    """Rows of :data:`_WITH_OUTCOMES` (one per order and acknowledged service), grouped."""
    found: dict[str, tuple[Order, dict[str, ServiceOutcome]]] = {}
    for row in rows:
        order_id = row[0]
        if order_id not in found:
            found[order_id] = (_order(row), {})
        if row[6] is not None:
            found[order_id][1][row[6]] = ServiceOutcome(row[7], row[8])
    return [StoredOrder(order, outcomes) for order, outcomes in found.values()]


def _stored_cart(conn: Connection, user_id: str) -> StoredCart:
    row = conn.execute(
        "SELECT lines::text, version FROM carts WHERE user_id = %s", (user_id,)
    ).fetchone()
    return NO_CART if row is None else StoredCart(decode_lines(row[0]), row[1])


def _write_cart(conn: Connection, user_id: str, payload: str, version: int) -> int:
    """Store the cart if it is at *version*; the new version, or :class:`CartConflict`.

    A concurrent writer of the same row makes this one wait for its commit; the version it
    then finds no longer matches, and the conflict carries the winner's cart.
    """
    if version == 0:
        if payload == EMPTY_LINES:  # nothing stored, nothing to store, unless a row appeared
            current = _stored_cart(conn, user_id)
            if current.version:
                raise CartConflict(current)
            return 0
        written = conn.execute(
            "INSERT INTO carts (user_id, lines, version) VALUES (%s, %s, 1) "
            "ON CONFLICT (user_id) DO NOTHING",
            (user_id, payload),
        ).rowcount
    else:
        written = conn.execute(
            "UPDATE carts SET lines = %s, version = version + 1, updated_at = now() "
            "WHERE user_id = %s AND version = %s",
            (payload, user_id, version),
        ).rowcount
    if not written:
        raise CartConflict(_stored_cart(conn, user_id))
    return version + 1


@attrs.frozen
class _CartWrite:
    """One cart write of a batch: :meth:`PostgresStore.save_cart` without an add key."""

    user_id: str
    payload: str
    version: int
    stock_check: tuple[str, int] | None


def _write_carts(conn: Connection, writes: list[_CartWrite]) -> list[Outcome]:
    """Every write of *writes* in one transaction, each conditional on its version.

    Statements per batch, not per write: one stock read for the adds' checks, an advisory
    lock a user taken in key order (two nodes' batches never deadlock, whether their carts
    exist yet or not), one UPDATE and one INSERT over arrays, and one read of the carts that
    conflicted. Waiting for a lock longer than :data:`LOCK_TIMEOUT` fails the batch. A write
    refused by its stock check or its version changes nothing; the others commit.
    """
    outcomes: list[Outcome | None] = [None] * len(writes)
    with _transaction(conn):
        skus = sorted({w.stock_check[0] for w in writes if w.stock_check is not None})
        stock: dict[str, int] = {}
        if skus:
            stock = dict(conn.execute(
                "SELECT sku, available FROM stock WHERE sku = ANY(%s)", (skus,)
            ).fetchall())
        seen: set[str] = set()
        todo: set[int] = set()
        for i, write in enumerate(writes):
            if write.stock_check is not None:
                sku, quantity = write.stock_check
                try:
                    check_stock(sku, quantity, stock.get(sku, 0))
                except DomainError as refusal:
                    outcomes[i] = (False, refusal)
                    continue
            if write.user_id in seen:  # never from one node's actors; answered "reload"
                continue
            seen.add(write.user_id)
            todo.add(i)
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, k) FROM (SELECT DISTINCT hashtext(u) AS k "
            "FROM unnest(%s::text[]) AS u ORDER BY k OFFSET 0) AS keys",
            (CART_LOCK, sorted(seen)),
        )
        chosen = [writes[i] for i in sorted(todo)]
        updates = [w for w in chosen if w.version > 0]
        inserts = [w for w in chosen if w.version == 0 and w.payload != EMPTY_LINES]
        written: set[str] = set()
        if updates:
            written.update(row[0] for row in conn.execute(
                "UPDATE carts c SET lines = v.lines::jsonb, version = c.version + 1, "
                "updated_at = now() "
                "FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS v(user_id, lines, version) "
                "WHERE c.user_id = v.user_id AND c.version = v.version RETURNING c.user_id",
                ([w.user_id for w in updates], [w.payload for w in updates],
                 [w.version for w in updates]),
            ).fetchall())
        if inserts:
            written.update(row[0] for row in conn.execute(
                "INSERT INTO carts (user_id, lines, version) "
                "SELECT v.user_id, v.lines::jsonb, 1 "
                "FROM unnest(%s::text[], %s::text[]) AS v(user_id, lines) ORDER BY v.user_id "
                "ON CONFLICT (user_id) DO NOTHING RETURNING user_id",
                ([w.user_id for w in inserts], [w.payload for w in inserts]),
            ).fetchall())
        applied = {i for i in todo if writes[i].user_id in written}
        unsettled = [i for i, done in enumerate(outcomes) if done is None and i not in applied]
        current: dict[str, StoredCart] = {}
        if unsettled:
            current = {
                row[0]: StoredCart(decode_lines(row[1]), row[2])
                for row in conn.execute(
                    "SELECT user_id, lines::text, version FROM carts WHERE user_id = ANY(%s)",
                    (sorted({writes[i].user_id for i in unsettled}),),
                ).fetchall()
            }
    for i in applied:
        outcomes[i] = (True, writes[i].version + 1)
    for i in unsettled:
        write, stored = writes[i], current.get(writes[i].user_id, NO_CART)
        if i in todo and write.version == 0 and write.payload == EMPTY_LINES and not stored.version:
            outcomes[i] = (True, 0)  # nothing stored, nothing to store
        else:
            outcomes[i] = (False, CartConflict(stored))
    return [outcome for outcome in outcomes if outcome is not None]


def _cart_versions(conn: Connection, user_ids: list[str]) -> list[Outcome]:
    """The stored version of each cart of *user_ids* (0: none), in one query."""
    found = dict(conn.execute(
        "SELECT user_id, version FROM carts WHERE user_id = ANY(%s)", (sorted(set(user_ids)),)
    ).fetchall())
    return [(True, int(found.get(user_id, 0))) for user_id in user_ids]


def _available(conn: Connection, sku: str) -> int:
    """The units of *sku* in stock now (0 for a SKU never stocked)."""
    row = conn.execute("SELECT available FROM stock WHERE sku = %s", (sku,)).fetchone()
    return 0 if row is None else int(row[0])


def _order_by_key(conn: Connection, key: str) -> Order | None:
    row = conn.execute(
        f"SELECT {_ORDER_COLUMNS} FROM orders o WHERE o.idempotency_key = %s", (key,)
    ).fetchone()
    return None if row is None else _order(row)


def _take_stock(conn: Connection, order: Order) -> None:
    """Take every line's quantity from stock, SKU by SKU in name order (no deadlocks between
    checkouts); :class:`InsufficientStock` as soon as one SKU has too little."""
    wanted = quantities(order.lines)
    for sku in sorted(wanted):
        for _ in range(STOCK_ATTEMPTS):
            taken = conn.execute(
                "UPDATE stock SET available = available - %s WHERE sku = %s AND available >= %s",
                (wanted[sku], sku, wanted[sku]),
            ).rowcount
            if taken:
                break
            # The domain's rule makes the refusal; should it not refuse, stock rose meanwhile.
            check_stock(sku, wanted[sku], _available(conn, sku))
        else:
            raise StoreError(f"the stock of {sku} kept changing during checkout; retry")


@attrs.define
class PostgresStore(Store):
    """A PostgreSQL database (schema chosen by the URL's search_path) shared by many nodes.

    Every operation is one transaction on a connection from a ``psycopg_pool`` pool of
    ``pool_size`` connections (``READ_RESERVE`` of them for reads only), run in a worker
    thread through ``limiter`` (as many tokens as the pool has connections, so no thread
    ever waits for one; see :class:`~trioshop.store.gates.Gates`). Every statement gives up
    after ``LOCK_TIMEOUT`` waiting for a lock and ``STATEMENT_TIMEOUT`` in all, and a
    connection the server ended is replaced and the operation tried once more.
    Nothing is cached: carts are written
    conditional on their version, stock is taken by conditional decrements, and the outbox
    has one row per order and registered service, claimed by ``pending`` for
    ``claim_seconds``. A dedicated connection LISTENs for the checkouts of every node.

    Use :func:`open_postgres_store`, or ``await nursery.start(store.run, initial_stock)``.
    """

    exclusive: ClassVar[bool] = False

    url: str
    pool_size: int = POOL_SIZE
    claim_seconds: float = CLAIM_SECONDS
    # The thread hop itself is unbounded: a connection's token (``limiter``) is taken first.
    _hop: trio.CapacityLimiter = attrs.field(
        factory=lambda: trio.CapacityLimiter(math.inf), init=False, repr=False
    )
    _gates: Gates = attrs.field(init=False, repr=False)
    # Users whose cart write waited out a lock alone, and until when their writes skip the
    # batches (trio time), oldest first.
    _stuck: dict[str, float] = attrs.field(factory=dict, init=False, repr=False)
    _pool: ConnectionPool[Connection] | None = attrs.field(default=None, init=False)
    _outbox_news: trio.Event = attrs.field(factory=trio.Event, init=False)
    # The services this node queues its orders for (register_service, unregister_service).
    _services: set[str] = attrs.field(factory=set, init=False)
    # The server process of the listen connection (0: none), for operators and tests.
    _listener_pid: int = attrs.field(default=0, init=False)
    _transactions: int = attrs.field(default=0, init=False)
    _operations: int = attrs.field(default=0, init=False)
    # Cart writes without an add key, and the version checks of views, go in batches: one
    # worker trip and one transaction (or query) for every cart waiting (bench/README.md).
    _writes: Batcher[_CartWrite] = attrs.field(init=False)
    _versions: Batcher[str] = attrs.field(init=False)

    @_gates.default
    def _places(self) -> Gates:
        return Gates(self.pool_size)

    @property
    def limiter(self) -> trio.CapacityLimiter:
        """A token per pooled connection (and worker thread): whoever holds one has one."""
        return self._gates.connections

    @property
    def writers(self) -> trio.CapacityLimiter:
        """A token per connection a write may hold (the pool's, but the reads' reserve)."""
        return self._gates.writers

    @_writes.default
    def _cart_writer(self) -> Batcher[_CartWrite]:
        async def write(writes: list[_CartWrite]) -> list[Outcome]:
            try:
                return await self._run_held(
                    lambda conn: _write_carts(conn, writes), writes=len(writes)
                )
            except StoreError as exc:
                if len(writes) == 1:
                    self._note_stuck(writes[0].user_id, exc)
                raise

        async def apply(writes: list[_CartWrite]) -> list[Outcome]:
            for attempt in range(self.pool_size + 1):
                try:
                    return await write(writes)
                except StoreError as exc:
                    failure = _failure(exc)
                    if failure is _Failure.DOWN or (
                        failure is _Failure.RETRY and attempt == self.pool_size
                    ):
                        raise
                    if failure is _Failure.ALONE:
                        if len(writes) == 1:
                            raise
                        break
            # Refused for what one write held, or a lock waited on too long (nothing was
            # committed): one at a time, so that write fails alone and the others go through.
            outcomes: list[Outcome] = []
            for done, one in enumerate(writes):
                try:
                    outcomes += await write([one])
                except StoreError as exc:
                    if _failure(exc) is _Failure.DOWN:  # the rest would fail alike, slowly
                        return outcomes + [(False, exc)] * (len(writes) - done)
                    outcomes.append((False, exc))
            return outcomes

        return Batcher(apply, gate=self._gates.writing)

    @_versions.default
    def _version_reader(self) -> Batcher[str]:
        async def apply(user_ids: list[str]) -> list[Outcome]:
            return await self._run_held(lambda conn: _cart_versions(conn, user_ids))

        return Batcher(apply, gate=self._gates.reading)

    # -- opening and closing ------------------------------------------------------------

    def _prepare(self, initial: Mapping[str, int]) -> tuple[ConnectionPool[Connection], int]:
        """Connect, migrate, seed *initial* stock, prune old add keys, then open the pool."""
        where = _where(self.url)
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {where}: {_reason(exc)}") from exc
        try:
            with conn:
                version = migrate(conn)
                with conn.transaction():
                    _seed_stock(conn, initial)
                    _prune_add_keys(conn, _RETENTION)
            pool: ConnectionPool[Connection] = ConnectionPool(
                self.url, min_size=1, max_size=self.pool_size, open=False,
                timeout=POOL_TIMEOUT, name="trioshop", configure=_bound_statements,
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT, **KEEPALIVES,
                        **_session_name(self.url)},
            )
            try:
                pool.open(wait=True, timeout=POOL_TIMEOUT)
            except BaseException:
                pool.close()
                raise
        except (psycopg.Error, RuntimeError) as exc:
            raise StoreError(f"cannot prepare PostgreSQL at {where}: {_reason(exc)}") from exc
        return pool, version

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
        pool, version = await trio.to_thread.run_sync(self._prepare, initial, limiter=self.limiter)
        self._pool = pool
        try:
            listener = await self._connect_listener()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen, listener)
                await nursery.start(self._writes.run)
                await nursery.start(self._versions.run)
                log_event(
                    logger, "store opened", database=_where(self.url), schema_version=version,
                    pool_size=self.pool_size,
                )
                task_status.started()
        finally:
            self._pool = None
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(pool.close, limiter=self.limiter)

    # -- the outbox listener --------------------------------------------------------------

    def _listening_connection(self) -> Connection:
        conn = psycopg.connect(
            self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, **KEEPALIVES,
            **_session_name(self.url),
        )
        try:
            conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _connect_listener(self) -> Connection:
        """A new connection LISTENing on the outbox channel (its own, not the pool's)."""
        try:
            # Its own thread, outside the pool's limiter: a reconnection waiting for an
            # unreachable server holds none of the operations' places.
            conn = await trio.to_thread.run_sync(self._listening_connection)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot listen on PostgreSQL at {_where(self.url)}: {_reason(exc)}"
            ) from exc
        self._listener_pid = conn.info.backend_pid
        return conn

    async def _listen(self, conn: Connection) -> None:
        """Wake :meth:`wait_for_outbox` at every notification; reconnect when the link breaks.

        Waits for the socket on the Trio thread, then drains what arrived without blocking.
        After a reconnection it wakes the waiters once: what was sent meanwhile is lost.
        """
        delay = LISTEN_BACKOFF[0]
        while True:
            try:
                while True:
                    await trio.lowlevel.wait_readable(conn.fileno())
                    if sum(1 for _ in conn.notifies(timeout=0)):
                        self._wake()
            except psycopg.Error as exc:
                log_event(
                    logger, "outbox listener lost its connection", logging.WARNING,
                    error=_reason(exc),
                )
            finally:
                conn.close()
                self._listener_pid = 0
            while True:
                await trio.sleep(delay)
                delay = min(delay * 2, LISTEN_BACKOFF[1])
                try:
                    conn = await self._connect_listener()
                except StoreError as exc:
                    log_event(logger, "outbox listener cannot reconnect", logging.WARNING,
                              error=str(exc), retry_in=delay)
                    continue
                log_event(logger, "outbox listener reconnected")
                delay = LISTEN_BACKOFF[0]
                self._wake()
                break

    def _wake(self) -> None:
        self._outbox_news.set()
        self._outbox_news = trio.Event()

    async def wait_for_outbox(self) -> None:
        """Return at the next notification of a checkout that queued orders, on any node."""
        await self._outbox_news.wait()

    # -- running operations ---------------------------------------------------------------

    @staticmethod
    def _work(pool: ConnectionPool[Connection], work: Callable[[Connection], T]) -> T:
        """*work* on a pooled connection; once more on another if the server had closed it.

        A pooled connection the server ended (a restart, ``pg_terminate_backend``) fails its
        first statement, before anything is applied (a failed commit is an
        :class:`OutcomeUnknown`, never tried again): the pool's idle connections are checked
        (the others are likely gone too) and *work* runs again on a working one. A single
        autocommit statement cut just after its commit is repeated too: each such write of
        the store changes nothing the second time (acks, registrations, seeding) or only
        delays (an outbox claim taken twice runs out after ``claim_seconds``).
        """
        used: Connection | None = None
        try:
            with pool.connection() as conn:
                used = conn
                return work(conn)
        except psycopg.OperationalError:
            if used is None or not (used.broken or used.closed):
                raise
        pool.check()
        with pool.connection() as conn:
            return work(conn)

    async def _run(
        self,
        work: Callable[[Connection], T],
        *,
        ticket: Ticket | None = None,
        writes: int = 0,
        rows: Iterable[str] = (),
    ) -> T:
        """Run *work* with a pooled connection in a worker thread; psycopg's errors become
        :class:`StoreError`. *work* makes its own transaction (the connection autocommits)
        of *writes* operations, counted in :meth:`statistics` (0: a read, which may use the
        reserved connections). A write waits for a place at each of *rows* it may lock
        (``cart:<user>``, ``stock:<sku>``; see :class:`Gates`), StoreError if it cannot."""
        # Holding the gate, a connection is ours. Only then is the ticket claimed (on the
        # Trio thread, no hop back from the worker): a caller still queued can give up.
        async with self._gates.writing(rows) if writes else self._gates.reading():
            claim(ticket)
            return await self._run_held(_within_deadline(work, ticket), writes=writes)

    def _note_stuck(self, user_id: str, exc: StoreError) -> None:
        """Remember *user_id* as stuck if *exc* is a lock (or statement) timeout of its write
        alone: its next writes skip the batches for ``STUCK_SECONDS``."""
        if isinstance(exc.__cause__, _GAVE_UP):
            self._stuck.pop(user_id, None)
            self._stuck[user_id] = trio.current_time() + STUCK_SECONDS
            while len(self._stuck) > STUCK_MAX:
                del self._stuck[next(iter(self._stuck))]

    def _is_stuck(self, user_id: str) -> bool:
        until = self._stuck.get(user_id)
        if until is not None and until < trio.current_time():
            del self._stuck[user_id]
            return False
        return until is not None

    async def _write_alone(self, write: _CartWrite, ticket: Ticket | None) -> int:
        """A stuck user's cart write, beside the batches: only it waits for its row."""
        try:
            [(ok, value)] = await self._run(
                lambda conn: _write_carts(conn, [write]), ticket=ticket, writes=1,
                rows=[_cart_row(write.user_id)],
            )
        except StoreError as exc:
            self._note_stuck(write.user_id, exc)
            raise
        self._stuck.pop(write.user_id, None)
        if ok:
            return int(value)
        raise value

    async def _run_held(self, work: Callable[[Connection], T], *, writes: int = 0) -> T:
        """:meth:`_run` for a caller already holding a token of ``limiter``."""
        pool = self._pool
        if pool is None:
            raise StoreClosed("the store is not open")
        try:
            result = await trio.to_thread.run_sync(self._work, pool, work, limiter=self._hop)
        except (DomainError, CartConflict, StoreError):
            raise
        except PoolClosed as exc:
            raise StoreClosed("the store is shut down") from exc
        except PoolTimeout as exc:
            raise StoreError(
                f"no connection to PostgreSQL at {_where(self.url)} within {POOL_TIMEOUT:g} s; "
                "retry later"
            ) from exc
        except _GAVE_UP as exc:
            raise StoreError(
                f"PostgreSQL gave up waiting ({_reason(exc)}): another transaction holds a row "
                "this needs; nothing was changed, retry later"
            ) from exc
        except psycopg.OperationalError as exc:
            raise StoreError(
                f"PostgreSQL at {_where(self.url)} failed ({_reason(exc)}); retry later"
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(
                f"PostgreSQL refused the operation ({_reason(exc)}); nothing was changed"
            ) from exc
        except Exception as exc:
            raise unexpected(exc) from exc
        if writes:
            self._transactions += 1
            self._operations += writes
        return result

    # -- carts ----------------------------------------------------------------------------

    async def load_cart(self, user_id: str) -> StoredCart:
        return await self._run(lambda conn: _stored_cart(conn, user_id))

    async def cart_version(self, user_id: str) -> int:
        return int(await self._versions.submit(user_id))

    async def has_cart(self, user_id: str) -> bool:
        def read(conn: Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM carts WHERE user_id = %s AND lines <> '[]'::jsonb", (user_id,)
            ).fetchone()
            return row is not None

        return await self._run(read)

    async def save_cart(
        self,
        user_id: str,
        lines: tuple[CartLine, ...],
        *,
        version: int,
        ticket: Ticket | None = None,
        add_key: tuple[str, CartLine] | None = None,
        stock_check: tuple[str, int] | None = None,
    ) -> int:
        payload = encode_lines(lines)
        if add_key is None:
            write = _CartWrite(user_id, payload, version, stock_check)
            if self._is_stuck(user_id):
                return await self._write_alone(write, ticket)
            return int(await self._writes.submit(write, ticket))

        def save(conn: Connection) -> int:  # one at a time: the key's row needs its own rollback
            with _transaction(conn):
                if stock_check is not None:
                    check_stock(*stock_check, _available(conn, stock_check[0]))
                # A fresh key (even one committed by a concurrent writer, waited for)
                # is left alone: no row written, and the caller asks added_with_key.
                stored = conn.execute(
                    "INSERT INTO add_keys (user_id, key, line) VALUES (%s, %s, %s) "
                    "ON CONFLICT (user_id, key) DO UPDATE "
                    "SET line = excluded.line, created_at = excluded.created_at "
                    "WHERE add_keys.created_at <= now() - make_interval(secs => %s)",
                    (user_id, add_key[0], encode_lines((add_key[1],)), _RETENTION),
                ).rowcount
                if not stored:
                    raise CartConflict(_stored_cart(conn, user_id))
                return _write_cart(conn, user_id, payload, version)

        return await self._run(save, ticket=ticket, writes=1, rows=[_cart_row(user_id)])

    async def added_with_key(self, user_id: str, key: str) -> CartLine | None:
        def read(conn: Connection) -> CartLine | None:
            row = conn.execute(
                "SELECT line::text FROM add_keys WHERE user_id = %s AND key = %s "
                "AND created_at > now() - make_interval(secs => %s)",
                (user_id, key, _RETENTION),
            ).fetchone()
            return None if row is None else decode_lines(row[0])[0]

        return await self._run(read)

    # -- stock ----------------------------------------------------------------------------

    async def available(self, sku: str) -> int:
        return await self._run(lambda conn: _available(conn, sku))

    async def stock_levels(self) -> dict[str, int]:
        def read(conn: Connection) -> dict[str, int]:
            rows = conn.execute("SELECT sku, available FROM stock ORDER BY sku").fetchall()
            return {sku: int(available) for sku, available in rows}

        return await self._run(read)

    async def add_stock(self, initial: Mapping[str, int]) -> None:
        def seed(conn: Connection) -> None:
            _seed_stock(conn, initial)

        await self._run(seed, writes=1)

    # -- orders ---------------------------------------------------------------------------

    async def checkout(
        self, order: Order, *, version: int, ticket: Ticket | None = None
    ) -> Placement:
        key = order.idempotency_key
        services = sorted(self._services)  # as registered when the checkout starts

        def replayed(conn: Connection) -> Placement | None:
            earlier = None if key is None else replay(_order_by_key(conn, key), order.user_id)
            return None if earlier is None else Placement(earlier, replayed=True)

        def place(conn: Connection) -> Placement:
            try:
                with _transaction(conn):
                    if (placement := replayed(conn)) is not None:
                        return placement
                    try:
                        _write_cart(conn, order.user_id, EMPTY_LINES, version)
                    except CartConflict:
                        # We waited for the cart's other writer: if it was this key's
                        # checkout, answer as if it had come first (a statement sees it now).
                        if (placement := replayed(conn)) is not None:
                            return placement
                        raise
                    _take_stock(conn, order)
                    conn.execute(
                        "INSERT INTO orders (order_id, user_id, lines, total_cents, created_at,"
                        " idempotency_key) VALUES (%s, %s, %s, %s, %s, %s)",
                        (order.order_id, order.user_id, encode_lines(order.lines),
                         order.total_cents, order.timestamp, key),
                    )
                    queued = conn.execute(
                        "INSERT INTO outbox (order_id, service) SELECT %s, unnest(%s::text[])",
                        (order.order_id, services),
                    ).rowcount
                    if queued:
                        conn.execute("SELECT pg_notify(%s, %s)", (OUTBOX_CHANNEL, order.order_id))
                    return Placement(order)
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name != _KEY_CONSTRAINT:
                    raise
            # Another checkout with this key committed while ours ran: ours is rolled back.
            placement = replayed(conn)
            if placement is None:
                raise StoreError("the checkout's idempotency key is in use; retry")
            return placement

        rows = [_cart_row(order.user_id), *(f"stock:{sku}" for sku in quantities(order.lines))]
        return await self._run(place, ticket=ticket, writes=1, rows=rows)

    async def order(self, order_id: str) -> StoredOrder | None:
        def read(conn: Connection) -> StoredOrder | None:
            rows = conn.execute(
                f"{_WITH_OUTCOMES} WHERE o.order_id = %s ORDER BY b.service", (order_id,)
            ).fetchall()
            found = _with_outcomes(rows)
            return found[0] if found else None

        return await self._run(read)

    async def orders_for(self, user_id: str) -> list[StoredOrder]:
        def read(conn: Connection) -> list[StoredOrder]:
            rows = conn.execute(
                f"{_WITH_OUTCOMES} WHERE o.user_id = %s "
                "ORDER BY o.created_at DESC, o.placed DESC, b.service",
                (user_id,),
            ).fetchall()
            return _with_outcomes(rows)

        return await self._run(read)

    async def order_by_key(self, idempotency_key: str) -> Order | None:
        return await self._run(lambda conn: _order_by_key(conn, idempotency_key))

    # -- the outbox -----------------------------------------------------------------------

    async def register_service(self, service: str) -> None:
        """Queue every order this node places from now on for *service* too (the services
        table lists every service any node ran, for operators)."""

        def register(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO services (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                (service,),
            )

        await self._run(register, writes=1)
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
        return await self._run(lambda conn: _prune_add_keys(conn, retention), writes=1)

    async def pending(self, service: str, limit: int = 100) -> list[OutboxEntry]:
        """Claim up to *limit* of *service*'s unacknowledged entries no node holds a claim on.

        Claimed for ``claim_seconds``: no other node (nor this one) gets them meanwhile; a
        claim that runs out unacknowledged (its node died) lets them be claimed again.
        """

        def claim(conn: Connection) -> list[OutboxEntry]:
            rows = conn.execute(
                "WITH claimed AS ("
                " UPDATE outbox SET claimed_until = now() + make_interval(secs => %s)"
                " WHERE (order_id, service) IN ("
                "  SELECT order_id, service FROM outbox"
                "  WHERE service = %s AND status IS NULL"
                "  AND (claimed_until IS NULL OR claimed_until < now())"
                "  ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING seq, order_id) "
                f"SELECT c.seq, {_ORDER_COLUMNS} FROM claimed c JOIN orders o USING (order_id) "
                "ORDER BY c.seq",
                (self.claim_seconds, service, limit),
            ).fetchall()
            return [OutboxEntry(row[0], _order(row[1:])) for row in rows]

        return await self._run(claim, writes=1)

    async def ack(self, service: str, entry: OutboxEntry, status: str) -> None:
        """Record *status* unless the entry already has one (a second ack changes nothing)."""

        def record(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO outbox (order_id, service, status, at) VALUES (%s, %s, %s, now()) "
                "ON CONFLICT (order_id, service) DO UPDATE "
                "SET status = excluded.status, at = excluded.at WHERE outbox.status IS NULL",
                (entry.order.order_id, service, status),
            )

        await self._run(record, writes=1)

    # -- the store itself -----------------------------------------------------------------

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(self._transactions, self._operations)


def _cart_row(user_id: str) -> str:
    """The name of *user_id*'s cart row for :class:`Gates`."""
    return f"cart:{user_id}"


def _bound_statements(conn: Connection) -> None:
    """Bound every statement of a new pooled connection (see :data:`LOCK_TIMEOUT`)."""
    conn.execute(
        "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
        (_LOCK_BOUND, f"{round(STATEMENT_TIMEOUT * 1000)}ms"),
    )


def _within_deadline(work: Callable[[Connection], T], ticket: Ticket | None) -> Callable[
    [Connection], T
]:
    """*work*, its lock waits bounded by *ticket*'s deadline when that is nearer than
    :data:`LOCK_TIMEOUT`: the caller hears the refusal before it gives up waiting."""
    left = math.inf if ticket is None else ticket.deadline - trio.current_time()
    if left >= LOCK_TIMEOUT:
        return work
    bound = f"{max(1, int(left * 1000))}ms"  # 0 would mean no bound at all

    def bounded(conn: Connection) -> T:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (bound,))
        try:
            return work(conn)
        finally:
            if not conn.closed:
                try:
                    conn.execute("SELECT set_config('lock_timeout', %s, false)", (_LOCK_BOUND,))
                except psycopg.Error:
                    conn.close()  # the pool replaces it: no connection keeps a short bound

    return bounded


def _session_name(url: str) -> dict[str, Any]:
    """``application_name`` for a connection, unless *url* names one."""
    try:
        named = "application_name" in conninfo_to_dict(url)
    except psycopg.Error:
        named = False
    return {} if named else {"application_name": APPLICATION_NAME}


def _prune_add_keys(conn: Connection, retention: float) -> int:
    """Delete the add keys older than *retention* seconds, :data:`PRUNE_CHUNK` a statement
    (each well within :data:`STATEMENT_TIMEOUT`, however many there are); how many."""
    pruned = 0
    while True:
        deleted = conn.execute(
            "DELETE FROM add_keys WHERE (user_id, key) IN (SELECT user_id, key FROM add_keys "
            "WHERE created_at <= now() - make_interval(secs => %s) LIMIT %s)",
            (retention, PRUNE_CHUNK),
        ).rowcount
        pruned += deleted
        if deleted < PRUNE_CHUNK:
            return pruned


def _seed_stock(conn: Connection, initial: Mapping[str, int]) -> None:
    if initial:
        conn.execute(
            "INSERT INTO stock (sku, available) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[]) ON CONFLICT (sku) DO NOTHING",
            (list(initial), list(initial.values())),
        )


class _Failure(enum.Enum):
    """What a failed batch of cart writes calls for."""

    DOWN = "down"  # the database is unreachable or out of resources: every write fails alike
    RETRY = "retry"  # nothing was applied and another try can succeed (a deadlock victim, a
    # pooled connection the server had closed)
    ALONE = "alone"  # refused for what one write held, or a lock waited on: one at a time


# What PostgreSQL raises for a statement that waited out LOCK_TIMEOUT or STATEMENT_TIMEOUT.
_GAVE_UP = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)

# SQLSTATE classes of a link that broke before the commit: connection exceptions (08) and
# the server ending sessions (57P01-57P03: shutdown, crash, cannot connect now).
_LINK_LOST = ("08", "57P01", "57P02", "57P03")


def _failure(exc: StoreError) -> _Failure:
    """How to go on after *exc* failed a whole batch of cart writes (nothing was applied,
    except for :class:`OutcomeUnknown`, which is never tried again)."""
    cause = exc.__cause__
    if isinstance(exc, (StoreClosed, OutcomeUnknown)) or isinstance(
        cause, (PoolTimeout, PoolClosed)
    ):
        return _Failure.DOWN
    if isinstance(cause, _GAVE_UP):
        return _Failure.ALONE
    if isinstance(cause, psycopg.errors.TransactionRollback):
        return _Failure.RETRY
    if isinstance(cause, psycopg.OperationalError):
        state = cause.sqlstate
        return _Failure.RETRY if state is None or state.startswith(_LINK_LOST) else _Failure.DOWN
    return _Failure.ALONE


@contextmanager
def _transaction(conn: Connection) -> Iterator[None]:
    """A transaction whose failed COMMIT is an :class:`OutcomeUnknown`, not a plain error.

    A body that raises is rolled back (nothing happened). A commit that fails because the
    link to the server broke may have been applied or not: the caller must be told so.
    """
    transaction = conn.transaction()
    transaction.__enter__()
    try:
        yield
    except BaseException as exc:
        transaction.__exit__(type(exc), exc, exc.__traceback__)
        raise
    try:
        transaction.__exit__(None, None, None)
    except psycopg.OperationalError as exc:
        raise OutcomeUnknown(
            f"PostgreSQL at the commit failed ({_reason(exc)}); the change may have been "
            "applied: retry with the same idempotency key"
        ) from exc


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
