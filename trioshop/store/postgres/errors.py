"""How psycopg's and the pool's failures become StoreErrors marked with their kind, and what a
failed batch of cart writes does next for each kind."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import PoolClosed, PoolTimeout

from trioshop.store.base import (
    FailureKind,
    OutcomeUnknown,
    StoreClosed,
    StoreError,
    unexpected,
)

# How long an operation waits for a pooled connection: below the requests' deadlines, so
# that a database that is down answers "storage unavailable, retry" (503), not a timeout.
POOL_TIMEOUT = 1.0

# What PostgreSQL raises for a statement that waited out its lock_timeout or
# statement_timeout (55P03 lock_not_available, 57014 query_canceled).
GAVE_UP = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)
# A transaction PostgreSQL rolled back whole that another try can commit (psycopg raises
# them as OperationalError, not TransactionRollback): 40001 serialization_failure,
# 40P01 deadlock_detected.
ROLLED_BACK = ("40001", "40P01")
# Whether a rolled-back transaction's statement completed is unknown (40003).
COMPLETION_UNKNOWN = "40003"
# SQLSTATE classes of a link that broke before the commit: connection exceptions (08) and
# the server ending sessions (57P01-57P03: shutdown, crash, cannot connect now).
LINK_LOST = ("08", "57P01", "57P02", "57P03")


class Step(enum.Enum):
    """What a batch of cart writes that failed whole (nothing applied) does next."""

    RETRY = "retry"  # the whole batch again: another try can succeed
    SPLIT = "split"  # one write at a time: one write, or a lock it waited on, failed it
    FAIL = "fail"  # every write of the batch fails with the error (the rest would too)


def batch_policy(kind: FailureKind) -> Step:
    """What a batch of cart writes that failed with a StoreError of *kind* does next."""
    if kind is FailureKind.TRANSIENT:
        return Step.RETRY
    if kind in (FailureKind.UNAVAILABLE, FailureKind.OUTCOME_UNKNOWN):
        return Step.FAIL
    return Step.SPLIT


def classify(exc: BaseException) -> FailureKind:
    """The kind of failure *exc* (from psycopg, its pool, or anything else) is."""
    if isinstance(exc, (PoolTimeout, PoolClosed)):
        return FailureKind.UNAVAILABLE
    if isinstance(exc, GAVE_UP):
        return FailureKind.LOCKED
    if not isinstance(exc, psycopg.Error):
        return FailureKind.REFUSED
    state = exc.sqlstate
    if state in ROLLED_BACK:
        return FailureKind.TRANSIENT
    if state == COMPLETION_UNKNOWN:
        return FailureKind.OUTCOME_UNKNOWN
    if isinstance(exc, psycopg.OperationalError):
        if state is None or state.startswith(LINK_LOST):
            return FailureKind.TRANSIENT
        return FailureKind.UNAVAILABLE  # out of resources, refusing connections, ...
    return FailureKind.REFUSED


def translate(exc: Exception, where: str) -> StoreError:
    """*exc*, raised by an operation on the database at *where* (not a StoreError nor an
    answer such as a domain refusal), as the StoreError its caller gets, marked with its
    :func:`classify` kind. Use: ``raise translate(exc, where) from exc``.
    """
    kind = classify(exc)
    if isinstance(exc, PoolClosed):
        return StoreClosed("the store is shut down")
    if isinstance(exc, PoolTimeout):
        return StoreError(
            f"no connection to PostgreSQL at {where} within {POOL_TIMEOUT:g} s; retry later",
            kind=kind,
        )
    if isinstance(exc, GAVE_UP):
        return StoreError(
            f"PostgreSQL gave up waiting ({reason(exc)}): another transaction holds a row "
            "this needs; nothing was changed, retry later", kind=kind,
        )
    if isinstance(exc, psycopg.OperationalError):
        return StoreError(f"PostgreSQL at {where} failed ({reason(exc)}); retry later", kind=kind)
    if isinstance(exc, psycopg.Error):
        return StoreError(
            f"PostgreSQL refused the operation ({reason(exc)}); nothing was changed", kind=kind
        )
    return unexpected(exc)


def reason(exc: BaseException) -> str:
    """The first line of *exc*'s message (libpq adds hints on further lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def where(url: str) -> str:
    """``host:port/database`` of *url*, for messages (never the password)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "(an unreadable database URL)"
    host = params.get("host") or "localhost"
    port = params.get("port") or 5432
    database = params.get("dbname") or params.get("user") or "?"
    return f"{host}:{port}/{database}"


@contextmanager
def transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A transaction whose failed COMMIT is an :class:`OutcomeUnknown`, not a plain error.

    A body that raises is rolled back (nothing happened). A commit that fails because the
    link to the server broke may have been applied or not: the caller must be told so.
    """
    started = conn.transaction()
    started.__enter__()
    try:
        yield
    except BaseException as exc:
        started.__exit__(type(exc), exc, exc.__traceback__)
        raise
    try:
        started.__exit__(None, None, None)
    except psycopg.OperationalError as exc:
        raise OutcomeUnknown(
            f"PostgreSQL at the commit failed ({reason(exc)}); the change may have been "
            "applied: retry with the same idempotency key"
        ) from exc
