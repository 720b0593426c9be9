"""The checkout's traceparent, stored with the order and handed back with its outbox entries,
on every backend, also on a database migrated from before orders kept one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import trio

from tests.postgres import fresh_schema
from tests.store.support import INITIAL_STOCK, ONE_A, order, place
from trioshop.store import CartWrite, Store, open_store
from trioshop.store import migrations as sqlite_schema
from trioshop.store.postgres import schema as postgres_schema

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_outbox_entries_carry_the_checkouts_traceparent(store: Store) -> None:
    """Each service's entry of an order carries its checkout's traceparent; untraced: None."""
    for service in ("delivery", "notifier"):
        await store.register_service(service)
    version = await store.save_cart(CartWrite(user_id="u", lines=(ONE_A,), version=0))
    await store.checkout(order("traced", "u", ONE_A), version=version, trace_parent=TRACE)
    await place(store, "untraced", "v", ONE_A)
    for service in ("delivery", "notifier"):
        entries = await store.pending(service)
        assert [(e.order.order_id, e.trace_parent) for e in entries] == [
            ("traced", TRACE), ("untraced", None)
        ]


async def test_a_replayed_checkout_keeps_the_first_traceparent(store: Store) -> None:
    """A retry of a checkout (same key) queues nothing new: the entry keeps the first trace."""
    await store.register_service("delivery")
    version = await store.save_cart(CartWrite(user_id="u", lines=(ONE_A,), version=0))
    first = order("o1", "u", ONE_A, key="k1")
    await store.checkout(first, version=version, trace_parent=TRACE)
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    replay = await store.checkout(first, version=version + 1, trace_parent=other)
    assert replay.replayed
    [entry] = await store.pending("delivery")
    assert entry.trace_parent == TRACE


async def old_then_new(store: Store) -> None:
    """The order ``old`` queued for ``delivery`` before the migration comes with no
    traceparent, then a traced one placed now with its own."""
    await store.register_service("delivery")
    version = await store.save_cart(CartWrite(user_id="v", lines=(ONE_A,), version=0))
    await store.checkout(order("new", "v", ONE_A), version=version, trace_parent=TRACE)
    entries = await store.pending("delivery")
    assert [(e.order.order_id, e.trace_parent) for e in entries] == [
        ("old", None), ("new", TRACE)
    ]
    assert entries[0].order.lines == (ONE_A,)


async def test_sqlite_orders_placed_before_the_migration_have_no_traceparent(
    tmp_path: Path,
) -> None:
    """A database at the previous schema version migrates; its queued order carries None."""
    previous = sqlite_schema.MIGRATIONS.index(
        next(m for m in sqlite_schema.MIGRATIONS if "trace_parent" in m)
    )
    conn = sqlite3.connect(tmp_path / "trioshop.sqlite3", isolation_level=None)
    assert sqlite_schema.migrate(conn, sqlite_schema.MIGRATIONS[:previous]) == previous
    conn.executescript(
        "INSERT INTO orders VALUES ('old', 'u', '[[\"A\", \"Thing A\", 250, 1]]', 250, 1, NULL);"
        "INSERT INTO outbox (order_id, created_at) VALUES ('old', 1);"
        "INSERT INTO service_cursors VALUES ('delivery', 0);"
    )
    conn.close()
    async with open_store(tmp_path, INITIAL_STOCK, trio.CapacityLimiter(2)) as store:
        await old_then_new(store)


async def test_postgres_orders_placed_before_the_migration_have_no_traceparent() -> None:
    """A schema at the previous version migrates; its queued order carries None."""
    previous = postgres_schema.MIGRATIONS.index(
        next(m for m in postgres_schema.MIGRATIONS if "trace_parent" in m)
    )
    with fresh_schema() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            assert postgres_schema.migrate(conn, postgres_schema.MIGRATIONS[:previous]) == previous
            conn.execute(
                "INSERT INTO orders (order_id, user_id, lines, total_cents, created_at) "
                "VALUES ('old', 'u', '[[\"A\", \"Thing A\", 250, 1]]', 250, 1)"
            )
            conn.execute("INSERT INTO outbox (order_id, service) VALUES ('old', 'delivery')")
        async with open_store(
            None, INITIAL_STOCK, trio.CapacityLimiter(2), database_url=url
        ) as store:
            await old_then_new(store)
