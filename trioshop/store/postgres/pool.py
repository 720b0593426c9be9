"""A node's pool of connections to the database, and the hop of each operation to a worker
thread holding one: bounded statements, one retry on a connection the server closed, errors
translated."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import psycopg
import trio
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from trioshop.domain import DomainError
from trioshop.runtime import Ticket, attempts, thread_deadline
from trioshop.store.base import (
    ADD_KEY_RETENTION_SECONDS,
    CartConflict,
    FailureKind,
    StoreClosed,
    StoreError,
    claim,
)
from trioshop.store.postgres.errors import POOL_TIMEOUT, reason, translate, where
from trioshop.store.postgres.gates import Gates
from trioshop.store.postgres.schema import migrate
from trioshop.store.postgres.sql import Connection, delete_old_add_keys, seed_stock

T = TypeVar("T")

# libpq's connect_timeout (whole seconds) of every connection the store makes.
CONNECT_TIMEOUT = 5
# Connections (and worker threads) of one node's pool, unless told otherwise.
POOL_SIZE = 8
# A connection notices a dead server or network within about a minute.
KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 3}
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
# Tries of an operation whose pooled connection the server had closed: once more.
CLOSED_CONNECTION_ATTEMPTS = 2
# The name the store's sessions show in pg_stat_activity, unless the URL names one.
APPLICATION_NAME = "trioshop"


@attrs.define
class Database:
    """The database at ``url`` through a ``psycopg_pool`` pool of ``size`` connections.

    Every operation runs in a worker thread once it holds a place at ``gates`` (a reading or
    writing token, as many as the pool has connections, so no thread ever waits for one;
    ``READ_RESERVE`` of them for reads only, see :class:`~trioshop.store.postgres.gates.Gates`).
    Every statement gives up after ``LOCK_TIMEOUT`` waiting for a lock and
    ``STATEMENT_TIMEOUT`` in all, and a connection the server ended is replaced and the
    operation tried once more, unless its request's deadline has passed.
    Use :meth:`opened`.
    """

    url: str
    size: int = POOL_SIZE
    gates: Gates = attrs.field(init=False, repr=False)
    # Transactions committed and the write operations they carried (for statistics).
    transactions: int = attrs.field(default=0, init=False)
    operations: int = attrs.field(default=0, init=False)
    # The thread hop itself is unbounded: a connection's token (``limiter``) is taken first.
    _hop: trio.CapacityLimiter = attrs.field(
        factory=lambda: trio.CapacityLimiter(math.inf), init=False, repr=False
    )
    _pool: ConnectionPool[Connection] | None = attrs.field(default=None, init=False)

    @gates.default
    def _places(self) -> Gates:
        return Gates(self.size)

    @property
    def limiter(self) -> trio.CapacityLimiter:
        """A token per pooled connection (and worker thread): whoever holds one has one."""
        return self.gates.connections

    @property
    def where(self) -> str:
        """``host:port/database``, for messages."""
        return where(self.url)

    def _prepare(self, initial: Mapping[str, int]) -> tuple[ConnectionPool[Connection], int]:
        """Connect, migrate, seed *initial* stock, prune old add keys, then open the pool."""
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.where}: {reason(exc)}",
                kind=FailureKind.UNAVAILABLE,
            ) from exc
        try:
            with conn:
                version = migrate(conn)
                with conn.transaction():
                    seed_stock(conn, initial)
                    delete_old_add_keys(conn, float(ADD_KEY_RETENTION_SECONDS))
            pool: ConnectionPool[Connection] = ConnectionPool(
                self.url, min_size=1, max_size=self.size, open=False,
                timeout=POOL_TIMEOUT, name="trioshop", configure=_bound_statements,
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT, **KEEPALIVES,
                        **session_name(self.url)},
            )
            try:
                pool.open(wait=True, timeout=POOL_TIMEOUT)
            except BaseException:
                pool.close()
                raise
        except (psycopg.Error, RuntimeError) as exc:
            raise StoreError(
                f"cannot prepare PostgreSQL at {self.where}: {reason(exc)}"
            ) from exc
        return pool, version

    @asynccontextmanager
    async def opened(self, initial: Mapping[str, int]) -> AsyncIterator[int]:
        """The pool, open, with the schema migrated and *initial* stock seeded; yields the
        schema's version. Raises :class:`StoreError` with a one-line reason naming the
        database if it cannot get there. Leaving the block closes the pool (operations
        then raise :class:`StoreClosed`)."""
        pool, version = await trio.to_thread.run_sync(self._prepare, initial, limiter=self.limiter)
        self._pool = pool
        try:
            yield version
        finally:
            self._pool = None
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(pool.close, limiter=self.limiter)

    @staticmethod
    def _work(
        pool: ConnectionPool[Connection], work: Callable[[Connection], T], until: float
    ) -> T:
        """*work* on a pooled connection; once more on another if the server had closed it,
        unless *until* (its request's deadline on ``time.monotonic``'s clock) has passed.

        A pooled connection the server ended (a restart, ``pg_terminate_backend``) fails its
        first statement, before anything is applied (a failed commit is an
        :class:`OutcomeUnknown`, never tried again): the pool's idle connections are checked
        (the others are likely gone too) and *work* runs again on a working one. A single
        autocommit statement cut just after its commit is repeated too: each such write of
        the store changes nothing the second time (acks, registrations, seeding) or only
        delays (an outbox claim taken twice runs out after ``claim_seconds``).
        """
        failure: psycopg.OperationalError | None = None
        for _ in attempts(CLOSED_CONNECTION_ATTEMPTS, until, clock=time.monotonic):
            if failure is not None:
                pool.check()
            used: Connection | None = None
            try:
                with pool.connection() as conn:
                    used = conn
                    return work(conn)
            except psycopg.OperationalError as exc:
                if used is None or not (used.broken or used.closed):
                    raise
                failure = exc
        assert failure is not None
        raise failure

    async def run(
        self,
        work: Callable[[Connection], T],
        *,
        ticket: Ticket | None = None,
        writes: int = 0,
        rows: Iterable[str] = (),
    ) -> T:
        """Run *work* with a pooled connection in a worker thread; psycopg's errors become
        :class:`StoreError` (see :func:`~trioshop.store.postgres.errors.translate`). *work*
        makes its own transaction (the connection autocommits) of *writes* operations,
        counted in ``transactions`` and ``operations`` (0: a read, which may use the
        reserved connections). A write waits for a place at each of *rows* it may lock
        (``cart:<user>``, ``stock:<sku>``; see :class:`Gates`), StoreError if it cannot."""
        # Holding the gate, a connection is ours. Only then is the ticket claimed (on the
        # Trio thread, no hop back from the worker): a caller still queued can give up.
        async with self.gates.writing(rows) if writes else self.gates.reading():
            claim(ticket)
            deadline = math.inf if ticket is None else ticket.deadline
            return await self.run_held(
                _within_deadline(work, ticket), writes=writes, deadline=deadline
            )

    async def run_held(
        self, work: Callable[[Connection], T], *, writes: int = 0, deadline: float = math.inf
    ) -> T:
        """:meth:`run` for a caller already holding its place at ``gates`` (a batch), whose
        request gives up at *deadline* (Trio time): no retry starts after it."""
        pool = self._pool
        if pool is None:
            raise StoreClosed("the store is not open")
        until = thread_deadline(deadline)
        try:
            result = await trio.to_thread.run_sync(
                self._work, pool, work, until, limiter=self._hop
            )
        except (DomainError, CartConflict, StoreError):
            raise
        except Exception as exc:
            raise translate(exc, self.where) from exc
        if writes:
            self.transactions += 1
            self.operations += writes
        return result


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


def session_name(url: str) -> dict[str, Any]:
    """``application_name`` for a connection, unless *url* names one."""
    try:
        named = "application_name" in conninfo_to_dict(url)
    except psycopg.Error:
        named = False
    return {} if named else {"application_name": APPLICATION_NAME}
