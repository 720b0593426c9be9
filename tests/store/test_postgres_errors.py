"""Table tests of how PostgreSQL's failures are classified and what a failed batch does next."""

from __future__ import annotations

import psycopg
import pytest
from psycopg_pool import PoolClosed, PoolTimeout

from trioshop.store import StoreClosed
from trioshop.store.base import FailureKind, OutcomeUnknown, StoreError
from trioshop.store.postgres.errors import Step, batch_policy, translate

WHERE = "db.example:5432/shop"

# SQLSTATE, the kind of failure it is, what a batch of cart writes it failed does next.
SQLSTATES = [
    ("40P01", FailureKind.TRANSIENT, Step.RETRY),  # deadlock_detected
    ("40001", FailureKind.TRANSIENT, Step.RETRY),  # serialization_failure
    ("40003", FailureKind.OUTCOME_UNKNOWN, Step.FAIL),  # statement_completion_unknown
    ("55P03", FailureKind.LOCKED, Step.SPLIT),  # lock_not_available (lock_timeout)
    ("57014", FailureKind.LOCKED, Step.SPLIT),  # query_canceled (statement_timeout)
    ("08006", FailureKind.TRANSIENT, Step.RETRY),  # connection_failure
    ("08003", FailureKind.TRANSIENT, Step.RETRY),  # connection_does_not_exist
    ("08001", FailureKind.TRANSIENT, Step.RETRY),  # sqlclient_unable_to_establish_sqlconnection
    ("57P01", FailureKind.TRANSIENT, Step.RETRY),  # admin_shutdown
    ("57P02", FailureKind.TRANSIENT, Step.RETRY),  # crash_shutdown
    ("57P03", FailureKind.TRANSIENT, Step.RETRY),  # cannot_connect_now
    ("53300", FailureKind.UNAVAILABLE, Step.FAIL),  # too_many_connections
    ("53100", FailureKind.UNAVAILABLE, Step.FAIL),  # disk_full
    ("53200", FailureKind.UNAVAILABLE, Step.FAIL),  # out_of_memory
    ("23505", FailureKind.REFUSED, Step.SPLIT),  # unique_violation
    ("23514", FailureKind.REFUSED, Step.SPLIT),  # check_violation
    ("22003", FailureKind.REFUSED, Step.SPLIT),  # numeric_value_out_of_range
    ("42P01", FailureKind.REFUSED, Step.SPLIT),  # undefined_table
    ("XX000", FailureKind.REFUSED, Step.SPLIT),  # internal_error
]


@pytest.mark.parametrize(("sqlstate", "kind", "step"), SQLSTATES)
def test_sqlstate_kind_and_batch_step(sqlstate: str, kind: FailureKind, step: Step) -> None:
    """A psycopg error of each SQLSTATE becomes a StoreError of its kind, and the batch step."""
    cause = psycopg.errors.lookup(sqlstate)("the server said no")
    assert cause.sqlstate == sqlstate
    error = translate(cause, WHERE)
    assert type(error) is StoreError
    assert (error.kind, batch_policy(error.kind)) == (kind, step)


@pytest.mark.parametrize(
    ("cause", "kind", "step"),
    [
        (psycopg.OperationalError("server closed the connection"), FailureKind.TRANSIENT,
         Step.RETRY),  # the link broke before the server said why: no SQLSTATE
        (PoolTimeout("no connection"), FailureKind.UNAVAILABLE, Step.FAIL),
        (PoolClosed("closed"), FailureKind.UNAVAILABLE, Step.FAIL),
        (psycopg.InterfaceError("bad use"), FailureKind.REFUSED, Step.SPLIT),
        (ValueError("a bug"), FailureKind.REFUSED, Step.SPLIT),
    ],
)
def test_failures_without_sqlstate(cause: Exception, kind: FailureKind, step: Step) -> None:
    """Failures with no SQLSTATE (the pool's, a lost link, a bug) are classified too."""
    error = translate(cause, WHERE)
    assert (error.kind, batch_policy(error.kind)) == (kind, step)


def test_pool_closed_is_store_closed() -> None:
    """A closed pool is the store shut down; a pool timeout names the database."""
    assert isinstance(translate(PoolClosed("closed"), WHERE), StoreClosed)
    assert WHERE in str(translate(PoolTimeout("no connection"), WHERE))


def test_store_errors_keep_their_own_kind() -> None:
    """StoreClosed and OutcomeUnknown fail a batch; a plain StoreError splits it."""
    assert batch_policy(StoreClosed("closed").kind) is Step.FAIL
    assert batch_policy(OutcomeUnknown("commit lost").kind) is Step.FAIL
    assert batch_policy(StoreError("refused").kind) is Step.SPLIT
    assert StoreError("busy", kind=FailureKind.LOCKED).kind is FailureKind.LOCKED
