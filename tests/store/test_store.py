"""Tests of both stores (memory and SQLite) against the same expectations, and of migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from trioshop.domain import CartLine, IdempotencyKeyReused, InsufficientStock, Order
from trioshop.runtime import Ticket
from trioshop.store import MemoryStore, OperationAbandoned, Store, StoreError, open_store
from trioshop.store.migrations import MIGRATIONS, migrate, schema_version

INITIAL_STOCK = {"A": 5, "B": 2}
LINE_A = CartLine("A", "Thing A", 250, 2)
LINE_B = CartLine("B", "Thing B", 1000, 1)


def order(order_id: str, user: str, *lines: CartLine, key: str | None = None) -> Order:
    return Order(order_id, user, lines, sum(x.price_cents * x.quantity for x in lines), 1, key)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    data_dir = None if request.param == "memory" else tmp_path
    async with open_store(data_dir, INITIAL_STOCK, trio.CapacityLimiter(2)) as opened:
        yield opened


async def test_stock_is_seeded_from_registry(store: Store) -> None:
    """Live stock starts at the registry's figures."""
    assert store.stock == {"A": 5, "B": 2}


async def test_cart_round_trip(store: Store) -> None:
    """A saved cart loads back in order; saving no lines deletes it."""
    await store.save_cart("u", (LINE_B, LINE_A))
    assert await store.load_cart("u") == (LINE_B, LINE_A)
    assert "u" in store.cart_owners
    await store.save_cart("u", ())
    assert await store.load_cart("u") == ()
    assert "u" not in store.cart_owners


async def test_checkout_reserves_stock_and_deletes_cart(store: Store) -> None:
    """Checkout stores the order, decrements stock, deletes the cart, queues the order."""
    await store.save_cart("u", (LINE_A, LINE_B))
    placed = await store.checkout(order("o1", "u", LINE_A, LINE_B))
    assert placed.order.order_id == "o1" and not placed.replayed
    assert store.stock == {"A": 3, "B": 1}
    assert await store.load_cart("u") == ()
    stored = await store.order("o1")
    assert stored is not None and stored.order.lines == (LINE_A, LINE_B)
    assert [e.order.order_id for e in await store.pending("delivery")] == ["o1"]


async def test_checkout_is_all_or_nothing(store: Store) -> None:
    """One short line refuses the whole order and changes nothing."""
    too_many_b = CartLine("B", "Thing B", 1000, 3)
    with pytest.raises(InsufficientStock) as refused:
        await store.checkout(order("o1", "u", LINE_A, too_many_b))
    assert (refused.value.sku, refused.value.requested, refused.value.available) == ("B", 3, 2)
    assert store.stock == {"A": 5, "B": 2}
    assert await store.order("o1") is None
    assert await store.pending("delivery") == []


async def test_sqlite_never_oversold_under_concurrency(tmp_path: Path) -> None:
    """20 concurrent one-unit checkouts against stock 5, batched by the writer: exactly 5 win."""
    outcomes: list[bool] = []

    async def buy(n: int) -> None:
        try:
            await store.checkout(order(f"o{n}", f"u{n}", CartLine("A", "Thing A", 250, 1)))
            outcomes.append(True)
        except InsufficientStock:
            outcomes.append(False)

    async with open_store(tmp_path, INITIAL_STOCK, trio.CapacityLimiter(1)) as store:
        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(buy, n)
        assert outcomes.count(True) == 5
        assert store.stock["A"] == 0
        assert store.statistics().transactions < 20  # the checkouts did share transactions


async def test_memory_store_operations_never_checkpoint() -> None:
    """Memory store operations finish without a checkpoint: atomic under Trio, no lock needed."""
    store = MemoryStore()
    with trio.testing.assert_no_checkpoints():
        await store.add_stock(INITIAL_STOCK)
        await store.save_cart("u", (LINE_A,))
        placed = await store.checkout(order("o1", "u", LINE_A))
        await store.ack("delivery", 1, "o1", "dispatched")
        await store.order("o1")
        await store.pending("notifier")
    assert placed.order.order_id == "o1"


async def test_idempotency_key(store: Store) -> None:
    """The same key returns the first order for its user and is refused for another user."""
    first = await store.checkout(order("o1", "u", LINE_A, key="k1"))
    again = await store.checkout(order("o2", "u", LINE_A, key="k1"))
    assert again.order == first.order and again.order.order_id == "o1"
    assert (first.replayed, again.replayed) == (False, True)
    assert store.stock["A"] == 3  # reserved once
    with pytest.raises(IdempotencyKeyReused):
        await store.checkout(order("o3", "other", LINE_A, key="k1"))
    assert (await store.order_by_key("k1")) == first.order


async def test_orders_for_user_newest_first(store: Store) -> None:
    """A user's orders come newest first; other users' are not included."""
    for n in range(3):
        await store.checkout(order(f"o{n}", "u", CartLine("A", "Thing A", 250, 1)))
    await store.checkout(order("x", "someone", CartLine("B", "Thing B", 1000, 1)))
    assert [s.order.order_id for s in await store.orders_for("u")] == ["o2", "o1", "o0"]


async def test_outbox_cursor_per_service(store: Store) -> None:
    """Each service sees every order until it acknowledges it; statuses are recorded."""
    for n in range(3):
        await store.checkout(order(f"o{n}", "u", CartLine("A", "Thing A", 250, 1)))
    first = (await store.pending("delivery"))[0]
    await store.ack("delivery", first.seq, first.order.order_id, "dispatched")
    assert [e.order.order_id for e in await store.pending("delivery")] == ["o1", "o2"]
    assert [e.order.order_id for e in await store.pending("notifier")] == ["o0", "o1", "o2"]
    stored = await store.order("o0")
    assert stored is not None
    assert stored.services["delivery"].status == "dispatched"


async def test_add_stock_keeps_known_stock(store: Store) -> None:
    """New SKUs get their registry stock; known SKUs keep their live stock."""
    await store.checkout(order("o", "u", LINE_A))
    await store.add_stock({**INITIAL_STOCK, "C": 9})
    assert store.stock == {"A": 3, "B": 2, "C": 9}


async def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    """Carts, stock, orders and cursors are still there after the store is reopened."""
    async with open_store(tmp_path, INITIAL_STOCK, trio.CapacityLimiter(1)) as store:
        await store.save_cart("keep", (LINE_B,))
        await store.checkout(order("o1", "u", LINE_A))
        entry = (await store.pending("delivery"))[0]
        await store.ack("delivery", entry.seq, "o1", "dispatched")
    async with open_store(tmp_path, INITIAL_STOCK, trio.CapacityLimiter(1)) as store:
        assert store.stock == {"A": 3, "B": 2}  # registry stock does not overwrite live stock
        assert store.cart_owners == {"keep"}
        assert await store.load_cart("keep") == (LINE_B,)
        assert await store.pending("delivery") == []
        assert [e.order.order_id for e in await store.pending("notifier")] == ["o1"]


async def test_sqlite_group_commit_batches_concurrent_writes(tmp_path: Path) -> None:
    """Concurrent cart saves share transactions: fewer batches than operations."""
    async with open_store(tmp_path, INITIAL_STOCK, trio.CapacityLimiter(1)) as store:
        before = store.statistics()
        async with trio.open_nursery() as nursery:
            for n in range(100):
                nursery.start_soon(store.save_cart, f"u{n}", (LINE_A,))
        after = store.statistics()
        assert after.operations - before.operations == 100
        assert after.transactions - before.transactions < 50
        assert len(store.cart_owners) == 100


def test_migrations_apply_once_and_refuse_newer(tmp_path: Path) -> None:
    """Migrations bring a new database to the latest version, are idempotent, refuse downgrades."""
    conn = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    assert migrate(conn) == len(MIGRATIONS)
    assert migrate(conn) == len(MIGRATIONS)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"carts", "stock", "orders", "outbox", "service_cursors", "order_status"} <= tables
    assert migrate(conn, [*MIGRATIONS, "CREATE TABLE extra (x INTEGER)"]) == len(MIGRATIONS) + 1
    with pytest.raises(RuntimeError, match="newer than this trioshop"):
        migrate(conn)
    assert schema_version(conn) == len(MIGRATIONS) + 1


async def test_sqlite_writer_survives_an_operation_that_raises(tmp_path: Path) -> None:
    """An operation raising something unexpected fails alone; the rest and the writer go on."""
    async with open_store(tmp_path, INITIAL_STOCK, trio.CapacityLimiter(1)) as store:
        huge = Order("big", "u", (LINE_A,), 2**70, 1)  # no 64-bit integer column holds it
        results: dict[str, object] = {}

        async def attempt(name: str, operation: Any) -> None:
            try:
                results[name] = await operation
            except StoreError as exc:
                results[name] = exc

        async with trio.open_nursery() as nursery:  # both land in one batch
            nursery.start_soon(attempt, "huge", store.checkout(huge))
            nursery.start_soon(attempt, "save", store.save_cart("v", (LINE_B,)))
        assert isinstance(results["huge"], StoreError)
        assert "nothing was changed" in str(results["huge"])
        assert results["save"] is None
        assert store.stock == INITIAL_STOCK
        assert await store.order("big") is None
        await store.save_cart("w", (LINE_A,))  # the writer is still serving
        assert await store.load_cart("w") == (LINE_A,)


async def test_add_key_is_kept_with_the_cart(store: Store) -> None:
    """An add's key and answer are stored with the cart change, per user."""
    await store.save_cart("u", (LINE_A,), add_key=("k", LINE_A))
    assert await store.added_with_key("u", "k") == LINE_A
    assert await store.added_with_key("other", "k") is None
    assert await store.added_with_key("u", "unknown") is None


async def test_abandoned_ticket_changes_nothing(store: Store) -> None:
    """A change whose caller gave up before it started is refused and leaves everything as is."""
    gone = Ticket()
    assert gone.abandon()
    with pytest.raises(OperationAbandoned):
        await store.save_cart("u", (LINE_A,), ticket=gone)
    with pytest.raises(OperationAbandoned):
        await store.checkout(order("o1", "u", LINE_A), ticket=gone)
    assert await store.load_cart("u") == ()
    assert store.stock == INITIAL_STOCK
    kept = Ticket()
    await store.save_cart("u", (LINE_A,), ticket=kept)
    assert kept.claimed and not kept.abandon()  # claimed: its caller must wait for the outcome
