"""The PostgreSQL schema's outbox migration, with nodes of the previous version still running."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import trio
from psycopg.rows import TupleRow

from tests.postgres import fresh_schema
from tests.store.support import INITIAL_STOCK, ONE_A, place
from trioshop.store import open_store
from trioshop.store.postgres.schema import MIGRATIONS, migrate

# The outbox migration: the one adding outbox.user_id.
USER_ID = next(n for n, m in enumerate(MIGRATIONS) if "ADD COLUMN user_id" in m)

# The statements of the version before it, word for word: its checkout queues an order for
# each service, its ack records an outcome (inserting the row if a service joined later).
OLD_CHECKOUT = "INSERT INTO outbox (order_id, service) SELECT %s, unnest(%s::text[])"
OLD_ACK = (
    "INSERT INTO outbox (order_id, service, status, at) VALUES (%s, %s, %s, now()) "
    "ON CONFLICT (order_id, service) DO UPDATE "
    "SET status = excluded.status, at = excluded.at WHERE outbox.status IS NULL"
)


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as schema_url:
        yield schema_url


def old_order(conn: psycopg.Connection[TupleRow], order_id: str, user: str) -> None:
    """An order as the previous version placed it, queued for delivery."""
    conn.execute(
        "INSERT INTO orders (order_id, user_id, lines, total_cents, created_at) "
        "VALUES (%s, %s, '[[\"A\", \"Thing A\", 250, 1]]', 250, 1)",
        (order_id, user),
    )
    conn.execute(OLD_CHECKOUT, (order_id, ["delivery"]))


def rows(conn: psycopg.Connection[TupleRow]) -> list[TupleRow]:
    """The outbox's (order, service, user) rows, oldest first."""
    return conn.execute("SELECT order_id, service, user_id FROM outbox ORDER BY seq").fetchall()


async def test_the_previous_versions_nodes_go_on_checking_out_after_the_migration(
    url: str,
) -> None:
    """Migrating backfills only unacknowledged rows; a node of the previous version still
    checks out and acks afterwards (its rows get their user), and claims keep its orders in
    each user's order."""
    with psycopg.connect(url, autocommit=True) as conn:
        assert migrate(conn, MIGRATIONS[:USER_ID]) == USER_ID
        old_order(conn, "acked", "ann")
        conn.execute(OLD_ACK, ("acked", "delivery", "dispatched"))
        old_order(conn, "open", "bob")
        assert migrate(conn) == len(MIGRATIONS)
        assert rows(conn) == [("acked", "delivery", None), ("open", "delivery", "bob")]
        # The rolling restart goes on: an old node checks out, and acks for a later service.
        old_order(conn, "old-later", "bob")
        conn.execute(OLD_ACK, ("open", "billing", "billed"))
        assert rows(conn) == [
            ("acked", "delivery", None), ("open", "delivery", "bob"),
            ("old-later", "delivery", "bob"), ("open", "billing", "bob"),
        ]
    async with open_store(None, INITIAL_STOCK, trio.CapacityLimiter(2), database_url=url) as new:
        await new.register_service("delivery")
        [first] = await new.pending("delivery", limit=1)
        assert first.order.order_id == "open"
        assert await new.pending("delivery") == []  # bob's later order waits for "open"
        await new.ack("delivery", first, "dispatched")
        await place(new, "new", "cy", ONE_A)
        taken = await new.pending("delivery")
        assert [(e.order.order_id, e.order.user_id) for e in taken] == [
            ("old-later", "bob"), ("new", "cy")
        ]
