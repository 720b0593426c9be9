"""The store contract every backend must pass (memory, SQLite, PostgreSQL); backend specifics."""

from __future__ import annotations

import sqlite3
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.store.support import INITIAL_STOCK, LINE_A, LINE_B, ONE_A, order, place
from trioshop.domain import CartLine, IdempotencyKeyReused, InsufficientStock, Order, Placement
from trioshop.runtime import Ticket
from trioshop.store import (
    CartConflict,
    CartWrite,
    MemoryStore,
    OperationAbandoned,
    PostgresStore,
    Store,
    StoredCart,
    StoreError,
    open_store,
)
from trioshop.store.migrations import MIGRATIONS, migrate, schema_version

EMPTY = StoredCart((), 0)


# -- the contract: carts -------------------------------------------------------------------


async def test_stock_is_seeded(store: Store) -> None:
    """Live stock starts at the figures the store was opened with; unknown SKUs have none."""
    assert await store.stock_levels() == INITIAL_STOCK
    assert "nothing" not in await store.stock_levels()


async def test_cart_round_trip_with_versions(store: Store) -> None:
    """Each save makes the version one higher; an emptied cart keeps its row, without lines."""
    assert await store.load_cart("u") == EMPTY
    assert not await store.has_cart("u")
    assert await store.save_cart(CartWrite(user_id="u", lines=(LINE_B, LINE_A), version=0)) == 1
    assert await store.load_cart("u") == StoredCart((LINE_B, LINE_A), 1)
    assert await store.has_cart("u")
    assert await store.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=1)) == 2
    assert await store.load_cart("u") == StoredCart((LINE_A,), 2)
    assert await store.save_cart(CartWrite(user_id="u", lines=(), version=2)) == 3
    assert await store.load_cart("u") == StoredCart((), 3)
    assert not await store.has_cart("u")
    assert (
        await store.save_cart(CartWrite(user_id="u", lines=(LINE_B,), version=3)) == 4
    )  # the row lives on
    assert await store.load_cart("u") == StoredCart((LINE_B,), 4)
    assert await store.load_cart("other") == EMPTY


async def test_saving_nothing_over_nothing_stores_nothing(store: Store) -> None:
    """Saving no lines for a cart never stored is no change: it stays at version 0."""
    assert await store.save_cart(CartWrite(user_id="u", lines=(), version=0)) == 0
    assert await store.load_cart("u") == EMPTY
    assert await store.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0)) == 1


async def test_cart_version(store: Store) -> None:
    """cart_version is the stored version per user, 0 for a cart never stored."""
    assert await store.cart_version("u") == 0
    await store.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0))
    await store.save_cart(CartWrite(user_id="u", lines=(LINE_A, LINE_B), version=1))
    await store.save_cart(CartWrite(user_id="v", lines=(LINE_B,), version=0))
    assert (await store.cart_version("u"), await store.cart_version("v")) == (2, 1)
    await store.save_cart(CartWrite(user_id="u", lines=(), version=2))
    assert await store.cart_version("u") == 3
    assert await store.cart_version("nobody") == 0


@pytest.mark.parametrize("stale", [0, 1, 3])
async def test_stale_save_conflicts_and_changes_nothing(store: Store, stale: int) -> None:
    """A save at any version but the stored one raises CartConflict with the stored cart."""
    await store.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0))
    await store.save_cart(CartWrite(user_id="u", lines=(LINE_A, LINE_B), version=1))
    stored = StoredCart((LINE_A, LINE_B), 2)
    for lines in [(LINE_B,), ()]:
        with pytest.raises(CartConflict) as conflict:
            await store.save_cart(CartWrite(user_id="u", lines=lines, version=stale))
        assert conflict.value.current == stored
        assert await store.load_cart("u") == stored


async def test_concurrent_writers_at_one_version_exactly_one_wins(store: Store) -> None:
    """Two writers at one version (a first save, then an update): exactly one wins."""
    rounds = [(0, {"x": (LINE_A,), "y": (LINE_B,)}), (1, {"x": (LINE_B, LINE_A), "y": ()})]
    for version, contenders in rounds:
        outcomes: dict[str, int | CartConflict] = {}

        async def write(
            name: str, lines: tuple[CartLine, ...], version: int, outcomes: dict[str, Any]
        ) -> None:
            try:
                outcomes[name] = await store.save_cart(
                    CartWrite(user_id="u", lines=lines, version=version)
                )
            except CartConflict as conflict:
                outcomes[name] = conflict

        async with trio.open_nursery() as nursery:
            for name, lines in contenders.items():
                nursery.start_soon(write, name, lines, version, outcomes)
        winners = [name for name, outcome in outcomes.items() if outcome == version + 1]
        losers = [outcome for outcome in outcomes.values() if isinstance(outcome, CartConflict)]
        assert (len(winners), len(losers)) == (1, 1), outcomes
        stored = StoredCart(contenders[winners[0]], version + 1)
        assert losers[0].current == stored
        assert await store.load_cart("u") == stored


async def test_add_keys_are_kept_with_the_cart_change_per_user(store: Store) -> None:
    """An add's key and answer are stored with its cart change, per user, and only with it."""
    assert (
        await store.save_cart(
            CartWrite(user_id="u", lines=(LINE_A,), version=0, add_key=("k", LINE_A))
        )
        == 1
    )
    assert await store.added_with_key("u", "k") == LINE_A
    assert await store.added_with_key("other", "k") is None
    assert await store.added_with_key("u", "unknown") is None
    with pytest.raises(CartConflict):  # a stale save stores neither the cart nor the key
        await store.save_cart(
            CartWrite(user_id="u", lines=(LINE_B,), version=0, add_key=("k2", LINE_B))
        )
    assert await store.added_with_key("u", "k2") is None
    assert (
        await store.save_cart(
            CartWrite(user_id="other", lines=(LINE_B,), version=0, add_key=("k", LINE_B))
        )
        == 1
    )
    assert await store.added_with_key("other", "k") == LINE_B
    assert await store.added_with_key("u", "k") == LINE_A


async def test_save_with_a_key_already_stored_conflicts(store: Store) -> None:
    """A save carrying a key the user's cart already stored raises CartConflict, changes nothing."""
    await store.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0, add_key=("k", LINE_A)))
    twice = CartLine("A", "Thing A", 250, 4)
    with pytest.raises(CartConflict) as conflict:  # at the current version all the same
        await store.save_cart(
            CartWrite(user_id="u", lines=(twice,), version=1, add_key=("k", LINE_A))
        )
    assert conflict.value.current == StoredCart((LINE_A,), 1)
    assert await store.load_cart("u") == StoredCart((LINE_A,), 1)
    assert await store.added_with_key("u", "k") == LINE_A


# -- the contract: checkout ----------------------------------------------------------------


async def test_checkout_reserves_stock_empties_cart_and_queues_order(store: Store) -> None:
    """Checkout stores the order, takes its stock, empties the cart (version + 1), queues it."""
    await store.register_service("delivery")
    version = await store.save_cart(CartWrite(user_id="u", lines=(LINE_A, LINE_B), version=0))
    placed = await store.checkout(order("o1", "u", LINE_A, LINE_B), version=version)
    assert placed == Placement(order("o1", "u", LINE_A, LINE_B))
    assert await store.stock_levels() == {"A": 3, "B": 1}
    assert ((await store.stock_levels()).get("A", 0), (await store.stock_levels()).get("B", 0)) == (
        3,
        1,
    )
    assert await store.load_cart("u") == StoredCart((), version + 1)
    assert not await store.has_cart("u")
    stored = await store.order("o1")
    assert stored is not None
    assert (stored.order, dict(stored.services)) == (placed.order, {})
    assert [e.order for e in await store.pending("delivery")] == [placed.order]
    assert await store.order("unknown") is None


async def test_stale_checkout_conflicts_and_changes_nothing(store: Store) -> None:
    """A checkout at a version no longer stored raises CartConflict: no order, stock as it was."""
    await store.register_service("delivery")
    await store.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0))
    await store.save_cart(CartWrite(user_id="u", lines=(LINE_A, LINE_B), version=1))
    with pytest.raises(CartConflict) as conflict:
        await store.checkout(order("o1", "u", LINE_A, key="k"), version=1)
    assert conflict.value.current == StoredCart((LINE_A, LINE_B), 2)
    assert await store.load_cart("u") == StoredCart((LINE_A, LINE_B), 2)
    assert await store.stock_levels() == INITIAL_STOCK
    assert await store.order("o1") is None
    assert await store.order_by_key("k") is None
    assert await store.orders_for("u") == []
    assert await store.pending("delivery") == []


async def test_checkout_is_all_or_nothing(store: Store) -> None:
    """One short line refuses the whole order and changes nothing, the cart included."""
    await store.register_service("delivery")
    too_many_b = CartLine("B", "Thing B", 1000, 3)
    version = await store.save_cart(CartWrite(user_id="u", lines=(LINE_A, too_many_b), version=0))
    with pytest.raises(InsufficientStock) as refused:
        await store.checkout(order("o1", "u", LINE_A, too_many_b), version=version)
    assert (refused.value.sku, refused.value.requested, refused.value.available) == ("B", 3, 2)
    assert await store.stock_levels() == INITIAL_STOCK
    assert await store.load_cart("u") == StoredCart((LINE_A, too_many_b), version)
    assert await store.order("o1") is None
    assert await store.pending("delivery") == []


async def test_idempotency_key_replays_for_its_user_and_is_refused_to_others(store: Store) -> None:
    """A used key answers the first order again (a replay changing nothing); others are refused."""
    await store.register_service("delivery")
    first = await place(store, "o1", "u", LINE_A, key="k1")
    assert not first.replayed
    version = await store.save_cart(
        CartWrite(user_id="u", lines=(LINE_B,), version=await store.cart_version("u"))
    )
    again = await store.checkout(order("o2", "u", LINE_B, key="k1"), version=version)
    assert again == Placement(first.order, replayed=True)
    assert await store.load_cart("u") == StoredCart((LINE_B,), version)  # the new cart stays
    assert await store.stock_levels() == {"A": 3, "B": 2}  # reserved once
    assert await store.order("o2") is None
    other = await store.save_cart(CartWrite(user_id="other", lines=(ONE_A,), version=0))
    with pytest.raises(IdempotencyKeyReused):
        await store.checkout(order("o3", "other", ONE_A, key="k1"), version=other)
    assert await store.load_cart("other") == StoredCart((ONE_A,), other)
    assert await store.stock_levels() == {"A": 3, "B": 2}
    assert await store.order_by_key("k1") == first.order
    assert await store.order_by_key("never") is None
    assert [e.order.order_id for e in await store.pending("delivery")] == ["o1"]


async def test_abandoned_ticket_changes_nothing(store: Store) -> None:
    """A change whose caller gave up before it started is refused and leaves everything as is."""
    await store.register_service("delivery")
    version = await store.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0))
    gone = Ticket()
    assert gone.abandon()
    with pytest.raises(OperationAbandoned):
        await store.save_cart(
            CartWrite(user_id="u", lines=(LINE_B,), version=version, add_key=("k", LINE_B)),
            ticket=gone,
        )
    with pytest.raises(OperationAbandoned):
        await store.checkout(order("o1", "u", LINE_A), version=version, ticket=gone)
    with pytest.raises(OperationAbandoned):  # nor is a new cart created
        await store.save_cart(CartWrite(user_id="new", lines=(LINE_A,), version=0), ticket=gone)
    assert await store.load_cart("u") == StoredCart((LINE_A,), version)
    assert await store.cart_version("new") == 0
    assert await store.added_with_key("u", "k") is None
    assert await store.stock_levels() == INITIAL_STOCK
    assert await store.order("o1") is None
    assert await store.pending("delivery") == []
    kept = Ticket()
    assert (
        await store.save_cart(CartWrite(user_id="u", lines=(LINE_B,), version=version), ticket=kept)
        == version + 1
    )
    assert kept.claimed and not kept.abandon()  # claimed: its caller must wait for the outcome


async def test_orders_for_user_newest_first(store: Store) -> None:
    """A user's orders come newest first, even within one second; others' are not included."""
    for n in range(3):
        await place(store, f"o{n}", "u", ONE_A)
    await place(store, "x", "someone", LINE_B)
    assert [s.order.order_id for s in await store.orders_for("u")] == ["o2", "o1", "o0"]
    assert [s.order.order_id for s in await store.orders_for("someone")] == ["x"]
    assert await store.orders_for("nobody") == []


async def test_outbox_each_service_sees_every_order_until_it_acks(store: Store) -> None:
    """Each service gets every order, oldest first, until it acks it; statuses are recorded."""
    for service in ("delivery", "notifier"):
        await store.register_service(service)
    for n in range(3):
        await place(store, f"o{n}", "u", ONE_A)
    [first] = await store.pending("delivery", limit=1)
    assert first.order.order_id == "o0"
    await store.ack("delivery", first, "dispatched")
    rest = await store.pending("delivery")
    assert [e.order.order_id for e in rest] == ["o1", "o2"]
    assert first.seq < rest[0].seq < rest[1].seq
    notifier = await store.pending("notifier")  # each service has its own queue (and seqs)
    assert [e.order for e in notifier] == [first.order, *(e.order for e in rest)]
    stored = await store.order("o0")
    assert stored is not None
    assert set(stored.services) == {"delivery"}
    assert stored.services["delivery"].status == "dispatched"
    for entry in rest:
        await store.ack("delivery", entry, "dispatched")
    for entry in notifier:
        await store.ack("notifier", entry, "sent")
    assert await store.pending("delivery") == []
    assert await store.pending("notifier") == []
    stored = await store.order("o1")
    assert stored is not None
    assert {s: o.status for s, o in stored.services.items()} == {
        "delivery": "dispatched",
        "notifier": "sent",
    }
    oldest = (await store.orders_for("u"))[-1]  # orders_for carries the statuses too
    assert oldest.order.order_id == "o0" and set(oldest.services) == {"delivery", "notifier"}
    await place(store, "o3", "u", ONE_A)  # later orders are queued for both as well
    for service in ("delivery", "notifier"):
        assert [e.order.order_id for e in await store.pending(service)] == ["o3"]


async def test_a_service_registered_later_starts_from_new_orders(store: Store) -> None:
    """A service new to the store gets the orders placed after it registered, no backlog."""
    await store.register_service("delivery")
    await place(store, "o0", "u", ONE_A)
    await store.register_service("notifier")
    assert await store.pending("notifier") == []
    await place(store, "o1", "u", ONE_A)
    assert [e.order.order_id for e in await store.pending("notifier")] == ["o1"]
    assert [e.order.order_id for e in await store.pending("delivery")] == ["o0", "o1"]


async def test_an_unregistered_service_is_queued_nothing_and_comes_back_anew(
    store: Store,
) -> None:
    """After unregister_service no order is queued for it; registered again, it starts anew."""
    for service in ("delivery", "notifier"):
        await store.register_service(service)
    await place(store, "o0", "u", ONE_A)
    [entry] = await store.pending("notifier")
    await store.ack("notifier", entry, "sent")
    await store.unregister_service("notifier")
    await place(store, "o1", "u", ONE_A)  # while notifier is gone: never its order
    await store.register_service("notifier")
    assert await store.pending("notifier") == []
    await place(store, "o2", "u", ONE_A)
    assert [e.order.order_id for e in await store.pending("notifier")] == ["o2"]
    assert [e.order.order_id for e in await store.pending("delivery")] == ["o0", "o1", "o2"]


async def test_keep_services_unregisters_the_others(store: Store) -> None:
    """keep_services unregisters every service but those given; back, one starts anew."""
    for service in ("delivery", "notifier", "audit"):
        await store.register_service(service)
    await place(store, "o0", "u", ONE_A)
    [entry] = await store.pending("notifier")
    await store.ack("notifier", entry, "sent")
    assert await store.keep_services(["delivery"]) == ["audit", "notifier"]
    assert await store.keep_services(["delivery"]) == []
    await place(store, "o1", "u", ONE_A)
    await store.register_service("notifier")
    await place(store, "o2", "u", ONE_A)
    assert [e.order.order_id for e in await store.pending("notifier")] == ["o2"]
    assert [e.order.order_id for e in await store.pending("delivery")] == ["o0", "o1", "o2"]


async def test_add_keys_past_their_retention_are_pruned(store: Store) -> None:
    """prune_add_keys deletes the keys older than the retention, and only those."""
    await store.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0, add_key=("k", LINE_A)))
    assert await store.prune_add_keys() == 0  # a key of now is kept for the retention
    assert await store.added_with_key("u", "k") == LINE_A
    assert await store.prune_add_keys(retention=0) == 1
    assert await store.added_with_key("u", "k") is None
    assert await store.prune_add_keys(retention=0) == 0


async def test_unacknowledged_entries_are_handed_out_again_or_claimed(store: Store) -> None:
    """Unacked entries: an exclusive store hands them out again; a shared one claims them."""
    await store.register_service("delivery")
    for n in range(2):
        await place(store, f"o{n}", "u", ONE_A)
    entries = await store.pending("delivery")
    assert [e.order.order_id for e in entries] == ["o0", "o1"]
    # A shared store claims what it hands out: no node (this one included) gets it meanwhile.
    shared = isinstance(store, PostgresStore)
    assert await store.pending("delivery") == ([] if shared else entries)


async def test_add_stock_keeps_known_stock(store: Store) -> None:
    """New SKUs get the given stock; known SKUs keep their live stock."""
    await place(store, "o", "u", LINE_A)
    await store.add_stock({**INITIAL_STOCK, "C": 9})
    assert await store.stock_levels() == {"A": 3, "B": 2, "C": 9}
    assert (await store.stock_levels()).get("C", 0) == 9


# Not on the memory store: its operations never checkpoint (see the memory-only test below),
# so concurrent checkouts run one after another and there is no race to lose.
@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
async def test_never_oversold_under_concurrency(store: Store) -> None:
    """20 concurrent one-unit checkouts against stock 5: exactly 5 orders, stock 0, no more."""
    await store.register_service("delivery")
    for n in range(20):
        assert await store.save_cart(CartWrite(user_id=f"u{n}", lines=(ONE_A,), version=0)) == 1
    sold: list[str] = []
    refused: list[str] = []

    async def buy(n: int) -> None:
        try:
            await store.checkout(order(f"o{n}", f"u{n}", ONE_A), version=1)
        except InsufficientStock:
            refused.append(f"u{n}")
        else:
            sold.append(f"u{n}")

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(buy, n)
    assert (len(sold), len(refused)) == (5, 15)
    assert (await store.stock_levels()).get("A", 0) == 0
    assert len(await store.pending("delivery")) == 5
    for user in sold:
        assert await store.load_cart(user) == StoredCart((), 2)
    for user in refused:
        assert await store.load_cart(user) == StoredCart((ONE_A,), 1)


async def test_statistics_count_committed_work(store: Store) -> None:
    """Each change counts in the statistics: at least one operation in one transaction."""
    before = store.statistics()
    await store.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0))
    after = store.statistics()
    assert after.operations > before.operations
    assert after.transactions > before.transactions
    assert after.operations >= after.transactions


# -- memory only ---------------------------------------------------------------------------


async def test_memory_store_operations_never_checkpoint() -> None:
    """Memory store operations finish without a checkpoint: atomic under Trio, no lock needed."""
    store = MemoryStore()
    with trio.testing.assert_no_checkpoints():
        await store.add_stock(INITIAL_STOCK)
        await store.register_service("delivery")
        version = await store.save_cart(
            CartWrite(user_id="u", lines=(LINE_A,), version=0, add_key=("k", LINE_A))
        )
        await store.added_with_key("u", "k")
        await store.load_cart("u")
        await store.cart_version("u")
        await store.has_cart("u")
        (await store.stock_levels()).get("A", 0)
        await store.stock_levels()
        placed = await store.checkout(order("o1", "u", LINE_A, key="k"), version=version)
        [entry] = await store.pending("delivery")
        await store.ack("delivery", entry, "dispatched")
        await store.order("o1")
        await store.orders_for("u")
        await store.order_by_key("k")
        with pytest.raises(CartConflict):
            await store.save_cart(CartWrite(user_id="u", lines=(LINE_B,), version=version))
        with pytest.raises(CartConflict):
            await store.checkout(order("o2", "u", LINE_B), version=version)
    assert placed.order.order_id == "o1"


# -- SQLite only ---------------------------------------------------------------------------


async def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    """Carts and their versions, add keys, stock, orders and cursors outlive the process."""
    async with open_store(tmp_path, INITIAL_STOCK, trio.CapacityLimiter(1)) as store:
        await store.save_cart(
            CartWrite(user_id="keep", lines=(LINE_B,), version=0, add_key=("k", LINE_B))
        )
        await store.save_cart(CartWrite(user_id="emptied", lines=(LINE_B,), version=0))
        await store.save_cart(CartWrite(user_id="emptied", lines=(), version=1))
        await place(store, "o1", "u", LINE_A)
        entry = (await store.pending("delivery"))[0]
        await store.ack("delivery", entry, "dispatched")
    async with open_store(tmp_path, INITIAL_STOCK, trio.CapacityLimiter(1)) as store:
        # The stock it is opened with does not overwrite live stock.
        assert await store.stock_levels() == {"A": 3, "B": 2}
        assert await store.load_cart("keep") == StoredCart((LINE_B,), 1)
        assert await store.added_with_key("keep", "k") == LINE_B
        assert await store.load_cart("emptied") == StoredCart((), 2)
        assert await store.load_cart("u") == StoredCart((), 2)
        assert await store.pending("delivery") == []
        assert [e.order.order_id for e in await store.pending("notifier")] == ["o1"]
        stored = await store.order("o1")
        assert stored is not None and stored.services["delivery"].status == "dispatched"
        with pytest.raises(CartConflict):  # versions go on from where they were
            await store.save_cart(CartWrite(user_id="emptied", lines=(LINE_A,), version=0))


async def test_sqlite_group_commit_batches_concurrent_writes(tmp_path: Path) -> None:
    """Concurrent cart saves and checkouts share transactions: fewer batches than operations."""
    async with open_store(tmp_path, INITIAL_STOCK, trio.CapacityLimiter(1)) as store:
        before = store.statistics()
        async with trio.open_nursery() as nursery:
            for n in range(100):
                write = CartWrite(user_id=f"u{n}", lines=(ONE_A,), version=0)
                nursery.start_soon(store.save_cart, write)
        after = store.statistics()
        assert after.operations - before.operations == 100
        assert after.transactions - before.transactions < 50
        assert all([await store.has_cart(f"u{n}") for n in range(100)])

        async def buy(n: int) -> None:
            with suppress(InsufficientStock):  # the contract counts the winners
                await store.checkout(order(f"o{n}", f"u{n}", ONE_A), version=1)

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(buy, n)
        final = store.statistics()
        assert final.operations - after.operations == 20
        assert final.transactions - after.transactions < 20
        assert (await store.stock_levels()).get("A", 0) == 0


async def test_sqlite_writer_survives_an_operation_that_raises(tmp_path: Path) -> None:
    """An operation raising something unexpected fails alone; the rest and the writer go on."""
    async with open_store(tmp_path, INITIAL_STOCK, trio.CapacityLimiter(1)) as store:
        version = await store.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0))
        huge = Order("big", "u", (LINE_A,), 2**70, 1)  # no 64-bit integer column holds it
        results: dict[str, object] = {}

        async def attempt(name: str, operation: Any) -> None:
            try:
                results[name] = await operation
            except StoreError as exc:
                results[name] = exc

        async with trio.open_nursery() as nursery:  # both land in one batch
            nursery.start_soon(attempt, "huge", store.checkout(huge, version=version))
            nursery.start_soon(
                attempt, "save", store.save_cart(CartWrite(user_id="v", lines=(LINE_B,), version=0))
            )
        assert isinstance(results["huge"], StoreError)
        assert "nothing was changed" in str(results["huge"])
        assert results["save"] == 1
        assert await store.stock_levels() == INITIAL_STOCK
        assert await store.order("big") is None
        assert await store.load_cart("u") == StoredCart((LINE_A,), version)  # not emptied
        assert (
            await store.save_cart(CartWrite(user_id="w", lines=(LINE_A,), version=0)) == 1
        )  # the writer still serves
        assert await store.load_cart("w") == StoredCart((LINE_A,), 1)


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


async def test_stock_check_goes_with_the_write(store: Store) -> None:
    """A save whose cart would hold more of a SKU than is in stock is refused, unchanged."""
    over = CartLine("A", "Thing A", 250, 6)  # A: 5 in stock
    with pytest.raises(InsufficientStock) as refused:
        await store.save_cart(
            CartWrite(user_id="u", lines=(over,), version=0, stock_check=("A", 6))
        )
    assert (refused.value.requested, refused.value.available) == (6, 5)
    assert await store.load_cart("u") == StoredCart((), 0)
    assert (
        await store.save_cart(
            CartWrite(user_id="u", lines=(LINE_A,), version=0, stock_check=("A", 2))
        )
        == 1
    )


async def test_stock_check_allows_exactly_the_stock_of_its_sku_alone(store: Store) -> None:
    """A cart may hold all of a SKU's stock; other SKUs' lines do not count against it."""
    all_of_a = CartLine("A", "Thing A", 250, 5)  # A: 5 in stock, B: 2
    write = CartWrite(user_id="u", lines=(all_of_a, LINE_B), version=0, stock_check=("B", 1))
    assert await store.save_cart(write) == 1
    write = CartWrite(user_id="u", lines=(all_of_a, LINE_B), version=1, stock_check=("A", 5))
    assert await store.save_cart(write) == 2
