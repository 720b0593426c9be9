"""Tests of the PostgreSQL store, with two stores on one schema standing for two nodes."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import quote

import psycopg
import pytest
import trio
import trio.testing

from tests.postgres import fresh_schema
from tests.store.support import INITIAL_STOCK, LINE_A, LINE_B, ONE_A, order, place
from trioshop.domain import CartLine, IdempotencyKeyReused, InsufficientStock
from trioshop.runtime import Ticket
from trioshop.store import CartConflict, CartWrite, OperationAbandoned, StoredCart, StoreError
from trioshop.store.postgres import (
    LOCK_TIMEOUT,
    PRUNE_CHUNK,
    PostgresStore,
    open_postgres_store,
    pool,
)
from trioshop.store.postgres.schema import MIGRATIONS
from trioshop.store.postgres.sql import CLAIM_OUTBOX
from trioshop.store.postgres.writes import CART_LOCK

Nodes = tuple[PostgresStore, PostgresStore]

# How long a test waits to see a store's session waiting for a lock.
LOCK_WAIT_SEEN = 10.0


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as schema_url:
        yield schema_url


@pytest.fixture
async def nodes(url: str) -> AsyncIterator[Nodes]:
    async with (
        open_postgres_store(url, INITIAL_STOCK, pool_size=4) as a,
        open_postgres_store(url, INITIAL_STOCK, pool_size=4) as b,
    ):
        yield a, b


def sql(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query)
        return cursor.fetchall() if cursor.description else []


# -- opening ------------------------------------------------------------------------------


async def test_nodes_starting_together_migrate_once(url: str) -> None:
    """Two stores opened at once on a fresh schema both start; each migration is applied once."""
    async def node(*, task_status: trio.TaskStatus[PostgresStore]) -> None:
        async with open_postgres_store(url, INITIAL_STOCK) as store:
            task_status.started(store)
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        opened: list[PostgresStore] = []

        async def start() -> None:
            opened.append(await nursery.start(node))

        async with trio.open_nursery() as starters:
            starters.start_soon(start)
            starters.start_soon(start)
        assert await opened[0].stock_levels() == await opened[1].stock_levels() == INITIAL_STOCK
        nursery.cancel_scope.cancel()
    versions = sql(url, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(n,) for n in range(1, len(MIGRATIONS) + 1)]


async def test_unreachable_server_is_a_one_line_store_error() -> None:
    """A server that refuses the connection is a StoreError naming host, port and database."""
    with pytest.raises(StoreError) as caught:
        async with open_postgres_store("postgresql://postgres@127.0.0.1:1/nowhere", {}):
            pass  # pragma: no cover
    message = str(caught.value)
    assert "127.0.0.1:1/nowhere" in message and "\n" not in message


async def test_reopening_keeps_stock_and_carts(url: str) -> None:
    """A restart sees what was stored; known SKUs keep their stock, new ones get theirs."""
    async with open_postgres_store(url, INITIAL_STOCK) as store:
        await place(store, "o-u", "u", LINE_A)
        await store.save_cart(CartWrite(user_id="w", lines=(LINE_B,), version=0))
    async with open_postgres_store(url, {**INITIAL_STOCK, "C": 7}) as store:
        assert await store.stock_levels() == {"A": 3, "B": 2, "C": 7}
        assert await store.load_cart("w") == StoredCart((LINE_B,), 1)
        assert await store.cart_version("u") == 2


async def test_closed_store_refuses_operations(url: str) -> None:
    """After the block, operations raise StoreError (StoreClosed)."""
    async with open_postgres_store(url, INITIAL_STOCK) as store:
        pass
    with pytest.raises(StoreError):
        await store.load_cart("u")


# -- carts ----------------------------------------------------------------------------------


async def test_cart_round_trip(nodes: Nodes) -> None:
    """A cart saved on one node loads on the other; emptying keeps the row, version + 1."""
    a, b = nodes
    assert await b.load_cart("u") == StoredCart((), 0) and not await b.has_cart("u")
    assert await a.save_cart(CartWrite(user_id="u", lines=(LINE_B, LINE_A), version=0)) == 1
    assert await b.load_cart("u") == StoredCart((LINE_B, LINE_A), 1)
    assert await b.has_cart("u") and await b.cart_version("u") == 1
    assert await b.save_cart(CartWrite(user_id="u", lines=(), version=1)) == 2
    assert await a.load_cart("u") == StoredCart((), 2)
    assert not await a.has_cart("u") and await a.cart_version("u") == 2


async def test_stale_version_is_a_conflict_with_the_stored_cart(nodes: Nodes) -> None:
    """A write conditional on an old version changes nothing and carries the current cart."""
    a, b = nodes
    await a.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0))
    await a.save_cart(CartWrite(user_id="u", lines=(LINE_A, LINE_B), version=1))
    with pytest.raises(CartConflict) as caught:
        await b.save_cart(CartWrite(user_id="u", lines=(), version=1))
    assert caught.value.current == StoredCart((LINE_A, LINE_B), 2)
    with pytest.raises(CartConflict):
        await b.save_cart(
            CartWrite(user_id="u", lines=(), version=0)
        )  # an emptied or new cart is no exception
    assert await b.load_cart("u") == StoredCart((LINE_A, LINE_B), 2)


async def test_concurrent_writes_one_winner_per_version(nodes: Nodes) -> None:
    """Both nodes write each of 20 carts at once, version by version: one wins each round."""
    a, b = nodes
    users = [f"user{n}" for n in range(20)]
    outcomes: dict[tuple[str, str], int | CartConflict] = {}

    async def write(
        store: PostgresStore, name: str, user: str, line: CartLine, version: int
    ) -> None:
        try:
            outcomes[user, name] = await store.save_cart(
                CartWrite(user_id=user, lines=(line,), version=version)
            )
        except CartConflict as conflict:
            outcomes[user, name] = conflict

    for version in range(3):
        async with trio.open_nursery() as nursery:
            for user in users:
                nursery.start_soon(write, a, "a", user, LINE_A, version)
                nursery.start_soon(write, b, "b", user, LINE_B, version)
        for user in users:
            won = [name for name in "ab" if outcomes[user, name] == version + 1]
            assert len(won) == 1, (user, outcomes[user, "a"], outcomes[user, "b"])
            lost = outcomes[user, "b" if won == ["a"] else "a"]
            assert isinstance(lost, CartConflict)
            winner = LINE_A if won == ["a"] else LINE_B
            assert lost.current == StoredCart((winner,), version + 1)
            assert await a.load_cart(user) == lost.current


async def test_writes_sent_together_commit_in_one_transaction_each_answered(
    nodes: Nodes,
) -> None:
    """Cart writes waiting together share one transaction; each gets its own outcome."""
    a, b = nodes
    await b.save_cart(CartWrite(user_id="stale", lines=(LINE_A,), version=0))
    await b.save_cart(CartWrite(user_id="old", lines=(LINE_A,), version=0))
    before = a.statistics()
    outcomes: dict[str, object] = {}

    async def write(
        user: str, lines: tuple[CartLine, ...], version: int,
        stock_check: tuple[str, int] | None = None,
    ) -> None:
        try:
            outcomes[user] = await a.save_cart(
                CartWrite(user_id=user, lines=lines, version=version, stock_check=stock_check))
        except (CartConflict, InsufficientStock) as refusal:
            outcomes[user] = refusal

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, "new", (LINE_A,), 0, ("A", 2))
        nursery.start_soon(write, "old", (LINE_A, LINE_B), 1)
        nursery.start_soon(write, "stale", (), 0)  # stored at version 1: a conflict
        nursery.start_soon(write, "greedy", (CartLine("B", "Thing B", 1000, 3),), 0, ("B", 3))
        nursery.start_soon(write, "empty", (), 0)  # nothing stored, nothing to store
    after = a.statistics()
    assert after.transactions - before.transactions == 1
    assert after.operations - before.operations == 5
    assert outcomes["new"] == 1 and outcomes["old"] == 2 and outcomes["empty"] == 0
    stale, greedy = outcomes["stale"], outcomes["greedy"]
    assert isinstance(stale, CartConflict) and stale.current == StoredCart((LINE_A,), 1)
    assert isinstance(greedy, InsufficientStock)
    assert await b.load_cart("new") == StoredCart((LINE_A,), 1)
    assert await b.load_cart("old") == StoredCart((LINE_A, LINE_B), 2)
    assert await b.load_cart("greedy") == StoredCart((), 0)
    assert not await b.has_cart("empty") and await b.cart_version("empty") == 0


async def test_keyed_adds_go_in_the_batch_with_the_other_writes(nodes: Nodes) -> None:
    """Adds with an idempotency key share the batch's one transaction: a fresh key commits
    with its cart, a key used already is a conflict that stores nothing."""
    a, b = nodes
    await b.save_cart(CartWrite(user_id="again", lines=(LINE_A,), version=0, add_key=("k", LINE_A)))
    before = a.statistics()
    outcomes: dict[str, object] = {}

    async def write(user: str, version: int, key: str | None) -> None:
        add_key = None if key is None else (key, LINE_B)
        write = CartWrite(user_id=user, lines=(LINE_B,), version=version, add_key=add_key)
        try:
            outcomes[user] = await a.save_cart(write)
        except CartConflict as refusal:
            outcomes[user] = refusal

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, "plain", 0, None)
        nursery.start_soon(write, "keyed", 0, "k")
        nursery.start_soon(write, "again", 1, "k")  # its key was used: a conflict
    assert a.statistics().transactions - before.transactions == 1
    assert outcomes["plain"] == 1 and outcomes["keyed"] == 1
    again = outcomes["again"]
    assert isinstance(again, CartConflict) and again.current == StoredCart((LINE_A,), 1)
    assert await b.added_with_key("keyed", "k") == LINE_B
    assert await b.added_with_key("again", "k") == LINE_A
    assert await b.load_cart("again") == StoredCart((LINE_A,), 1)


async def test_a_write_the_database_refuses_fails_alone_in_its_batch(nodes: Nodes) -> None:
    """A batched write PostgreSQL refuses (a NUL in its id) fails alone; the others commit."""
    a, b = nodes
    outcomes: dict[str, object] = {}

    async def write(user: str) -> None:
        try:
            outcomes[user] = await a.save_cart(CartWrite(user_id=user, lines=(LINE_A,), version=0))
        except StoreError as refusal:
            outcomes[user] = refusal

    async with trio.open_nursery() as nursery:
        for user in ("good1", "bad\x00id", "good2"):
            nursery.start_soon(write, user)
    assert outcomes["good1"] == outcomes["good2"] == 1
    assert isinstance(outcomes["bad\x00id"], StoreError)
    assert await b.load_cart("good1") == await b.load_cart("good2") == StoredCart((LINE_A,), 1)


async def test_a_cart_locked_elsewhere_holds_up_only_its_own_write(nodes: Nodes, url: str) -> None:
    """A cart row locked by another session fails its write after the lock timeout, alone."""
    a, _ = nodes
    await a.save_cart(CartWrite(user_id="busy", lines=(LINE_A,), version=0))
    outcomes: dict[str, object] = {}

    async def write(user: str, version: int) -> None:
        try:
            outcomes[user] = await a.save_cart(
                CartWrite(user_id=user, lines=(LINE_B,), version=version)
            )
        except StoreError as refusal:
            outcomes[user] = refusal

    with psycopg.connect(url, autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("SELECT 1 FROM carts WHERE user_id = 'busy' FOR UPDATE")
        async with trio.open_nursery() as nursery:  # one batch: the locked cart and two others
            nursery.start_soon(write, "busy", 1)
            nursery.start_soon(write, "free1", 0)
            nursery.start_soon(write, "free2", 0)
        other.execute("ROLLBACK")
    assert outcomes["free1"] == outcomes["free2"] == 1
    busy = outcomes["busy"]
    assert isinstance(busy, StoreError) and "lock timeout" in str(busy)
    assert await a.load_cart("busy") == StoredCart((LINE_A,), 1)


async def wait_for_lock_waiter(url: str, application_name: str) -> None:
    """Return once a session named *application_name* waits for a lock."""
    with trio.fail_after(LOCK_WAIT_SEEN):
        while not sql(url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           f"AND application_name = '{application_name}'"):
            await trio.sleep(0.02)


async def with_a_deadlock_victim(
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    write: Callable[[PostgresStore, int], Awaitable[None]],
) -> None:
    """Run ``write(store, version)``, whose batched write of cart ``u`` (at *version*)
    PostgreSQL aborts as a deadlock victim (40P01) after 1 s: another session holds the
    cart's row, then waits for the batch's advisory lock of the user."""
    # The store's sessions find the deadlock (deadlock_timeout) well before a lock or a
    # statement timeout would end their wait.
    monkeypatch.setattr(pool, "_LOCK_BOUND", "20s")
    monkeypatch.setattr(pool, "STATEMENT_TIMEOUT", 20.0)
    named = f"{url}{quote(' -cdeadlock_timeout=1s')}&application_name=deadlock_victim"
    async with open_postgres_store(named, INITIAL_STOCK, pool_size=4) as store:
        version = await store.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0))
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("SET deadlock_timeout = '60s'")  # the batch is the victim, not this
            other.execute("BEGIN")
            other.execute("SELECT 1 FROM carts WHERE user_id = 'u' FOR UPDATE")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write, store, version)
                # The batch holds the user's advisory lock and waits for the cart's row:
                # waiting for that advisory lock here closes the circle.
                await wait_for_lock_waiter(url, "deadlock_victim")
                await trio.to_thread.run_sync(
                    other.execute, "SELECT pg_advisory_xact_lock(%s, hashtext('u'))", (CART_LOCK,)
                )
                other.execute("ROLLBACK")


async def test_a_batch_chosen_as_a_deadlock_victim_is_tried_again(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch PostgreSQL aborts to break a deadlock (40P01) is tried again and commits."""
    written: list[int] = []

    async def write(store: PostgresStore, version: int) -> None:
        written.append(
            await store.save_cart(CartWrite(user_id="u", lines=(LINE_B,), version=version))
        )

    await with_a_deadlock_victim(url, monkeypatch, write)
    assert written == [2]


async def test_a_deadlock_victim_batch_is_not_tried_again_past_its_requests_deadline(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch aborted (40P01) after its request's deadline is answered, not tried again."""
    failed: list[StoreError] = []

    async def write(store: PostgresStore, version: int) -> None:
        # The deadlock is found after 1 s: the request gave up waiting by then.
        ticket = Ticket(deadline=trio.current_time() + 0.2)
        with pytest.raises(StoreError) as caught:
            await store.save_cart(
                CartWrite(user_id="u", lines=(LINE_B,), version=version), ticket=ticket
            )
        failed.append(caught.value)
        assert await store.load_cart("u") == StoredCart((LINE_A,), version)

    await with_a_deadlock_victim(url, monkeypatch, write)
    assert len(failed) == 1 and "deadlock" in str(failed[0])


async def test_an_ended_session_is_not_tried_again_past_the_requests_deadline(url: str) -> None:
    """After the server ended the pool's sessions, a request past its deadline is not tried
    again on a fresh connection (it fails, nothing changed); one with time left is."""
    named = f"{url}&application_name=ended_late"
    async with open_postgres_store(named, INITIAL_STOCK, pool_size=2) as store:
        await place(store, "o1", "alice", ONE_A)
        sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name = 'ended_late'")
        version = await store.save_cart(CartWrite(user_id="bob", lines=(ONE_A,), version=0))
        sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name = 'ended_late'")
        late = Ticket(deadline=trio.current_time() - 1)
        with pytest.raises(StoreError):
            await store.checkout(order("o2", "bob", ONE_A), version=version, ticket=late)
        assert await store.order("o2") is None
        placed = await store.checkout(order("o2", "bob", ONE_A), version=version)
        assert placed.order.order_id == "o2"


async def test_sessions_the_server_ended_do_not_fail_a_batch(url: str) -> None:
    """After the server ends every pooled session (as in a restart), batched writes commit."""
    named = f"{url}&application_name=ended_sessions"
    async with open_postgres_store(named, INITIAL_STOCK, pool_size=4) as store:
        async with trio.open_nursery() as nursery:  # open the pool's connections
            for n in range(20):
                nursery.start_soon(store.has_cart, f"u{n}")
        ended = sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = 'ended_sessions'")
        assert len(ended) >= 2  # the listener and at least one pooled connection
        versions: dict[str, int] = {}

        async def write(user: str) -> None:
            versions[user] = await store.save_cart(
                CartWrite(user_id=user, lines=(LINE_A,), version=0)
            )

        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(write, f"u{n}")
    assert set(versions.values()) == {1} and len(versions) == 50


async def test_every_operation_survives_sessions_the_server_ended(url: str) -> None:
    """Every pooled session ended by the server: reads, claims, acks and checkouts succeed."""
    named = f"{url}&application_name=ended_for_all"
    async with open_postgres_store(named, INITIAL_STOCK, pool_size=4) as store:
        await store.register_service("mail")
        version = await store.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0))

        async def end_sessions() -> None:
            async with trio.open_nursery() as nursery:  # open several pooled connections
                for n in range(12):
                    nursery.start_soon(store.has_cart, f"u{n}")
            assert sql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'ended_for_all'")

        await end_sessions()
        assert await store.load_cart("u") == StoredCart((LINE_A,), version)
        await end_sessions()
        assert await store.stock_levels() == INITIAL_STOCK
        await end_sessions()
        await store.ping()
        await end_sessions()
        placed = await store.checkout(order("o1", "u", LINE_A), version=version)
        await end_sessions()
        [entry] = await store.pending("mail")
        await end_sessions()
        await store.ack("mail", entry, "sent")
        await end_sessions()
        [stored] = await store.orders_for("u")
        assert stored.order == placed.order and stored.services["mail"].status == "sent"


async def test_a_locked_stock_row_fails_its_checkouts_and_leaves_reads_a_connection(
    url: str,
) -> None:
    """Checkouts of a SKU whose row another session holds fail after the lock timeout, no
    more than two at a time hold a connection, and reads get one meanwhile."""
    async with open_postgres_store(url, INITIAL_STOCK, pool_size=2) as store:
        users = [f"u{n}" for n in range(6)]
        for user in users:
            await store.save_cart(CartWrite(user_id=user, lines=(ONE_A,), version=0))
        failed: list[StoreError] = []
        reads: list[dict[str, int]] = []

        async def buy(user: str) -> None:
            with pytest.raises(StoreError) as caught:
                await store.checkout(order(f"o-{user}", user, ONE_A), version=1)
            failed.append(caught.value)

        with psycopg.connect(url, autocommit=True) as other:
            other.execute("BEGIN")
            other.execute("SELECT 1 FROM stock WHERE sku = 'A' FOR UPDATE")
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for user in users:
                        nursery.start_soon(buy, user)
                    await trio.testing.wait_all_tasks_blocked()
                    assert store.writers.borrowed_tokens <= 2  # the row's places
                    reads.append(await store.stock_levels())
                    await store.ping()
            other.execute("ROLLBACK")
        assert reads == [INITIAL_STOCK] and len(failed) == len(users)
        assert all("another transaction holds" in str(e) for e in failed), failed
        await place(store, "after", "u0", ONE_A)  # released: the row is writable again


async def test_a_checkout_waits_for_a_locked_row_no_longer_than_its_deadline(
    nodes: Nodes, url: str
) -> None:
    """A ticket whose deadline is nearer than the lock timeout bounds the checkout's wait."""
    a, _ = nodes
    await a.save_cart(CartWrite(user_id="u", lines=(ONE_A,), version=0))
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("SELECT 1 FROM stock WHERE sku = 'A' FOR UPDATE")
        started = trio.current_time()
        ticket = Ticket(deadline=started + 0.05)
        with pytest.raises(StoreError, match="lock timeout"):
            await a.checkout(order("o1", "u", ONE_A), version=1, ticket=ticket)
        waited = trio.current_time() - started
        other.execute("ROLLBACK")
    assert waited < LOCK_TIMEOUT * 0.75, waited
    await place(a, "o2", "u", ONE_A)  # the connection is back to the full bound: no error


async def test_pruning_more_add_keys_than_a_statement_deletes(nodes: Nodes, url: str) -> None:
    """Expired add keys beyond one PRUNE_CHUNK are all pruned, a chunk a statement; fresh
    keys stay."""
    a, _ = nodes
    expired = PRUNE_CHUNK * 2 + 7
    sql(url, "INSERT INTO add_keys (user_id, key, line, created_at) "
             f"SELECT 'u', 'k' || n, '[]'::jsonb, now() - interval '2 days' "
             f"FROM generate_series(1, {expired}) AS n")
    await a.save_cart(CartWrite(user_id="v", lines=(LINE_A,), version=0, add_key=("fresh", LINE_A)))
    assert await a.prune_add_keys() == expired
    assert sql(url, "SELECT key FROM add_keys") == [("fresh",)]


async def test_a_batched_write_waiting_for_a_connection_can_be_abandoned(url: str) -> None:
    """While every connection is taken, a write's caller can still give up: nothing is stored."""
    async with open_postgres_store(url, INITIAL_STOCK, pool_size=1) as store:
        ticket, release = Ticket(), trio.Event()
        abandoned: list[OperationAbandoned] = []

        async def occupy(*, task_status: trio.TaskStatus[None]) -> None:
            async with store.writers:  # the pool's one connection for writes is in use
                task_status.started()
                await release.wait()

        async def write() -> None:
            with pytest.raises(OperationAbandoned) as caught:
                await store.save_cart(
                    CartWrite(user_id="u", lines=(LINE_A,), version=0), ticket=ticket
                )
            abandoned.append(caught.value)

        async with trio.open_nursery() as nursery:
            await nursery.start(occupy)
            nursery.start_soon(write)
            await trio.testing.wait_all_tasks_blocked()
            assert ticket.abandon()  # not claimed while its batch waits for the connection
            release.set()
        assert len(abandoned) == 1 and await store.cart_version("u") == 0


async def test_two_nodes_batches_on_overlapping_carts_never_deadlock(nodes: Nodes) -> None:
    """Both nodes create and update the same users' carts at once for 2 s: no batch blocks."""
    # New users keep appearing (inserts racing on both nodes) while recent ones are updated:
    # the mix in which batches that locked only the existing rows deadlocked (3 of 4 runs of
    # 10 s with 128 writers a node; this shorter run is a smoke check, not that reproduction).
    a, b = nodes
    failures: list[str] = []
    deadline = trio.current_time() + 2.0

    async def node(store: PostgresStore, seed: int) -> None:
        locks: dict[str, trio.Lock] = {}
        versions: dict[str, int] = {}

        async def shopper(n: int) -> None:
            rng = random.Random(seed * 1000 + n)
            while trio.current_time() < deadline:
                epoch = int((deadline - trio.current_time()) * -50)
                user = f"u{rng.randint(epoch - 3, epoch)}-{rng.randint(0, 63)}"
                async with locks.setdefault(user, trio.Lock()):  # one write a user: an actor
                    try:
                        versions[user] = await store.save_cart(
                            CartWrite(user_id=user, lines=(LINE_A,), version=versions.get(user, 0)))
                    except CartConflict as conflict:
                        versions[user] = conflict.current.version
                    except StoreError as failure:
                        failures.append(str(failure))

        async with trio.open_nursery() as nursery:
            for n in range(128):
                nursery.start_soon(shopper, n)

    before = [(store.statistics().transactions, store._carts.batches) for store in nodes]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(node, a, 1)
        nursery.start_soon(node, b, 2)
    assert failures == []
    for store, (transactions, batches) in zip(nodes, before, strict=True):
        # Nor did a batch wait out the lock timeout and go one write at a time.
        assert store.statistics().transactions - transactions == store._carts.batches - batches


async def test_add_key_is_stored_with_the_cart(nodes: Nodes) -> None:
    """An add's key and answer commit with the cart; the same key again is a conflict."""
    a, b = nodes
    await a.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0, add_key=("k1", LINE_A)))
    assert await b.added_with_key("u", "k1") == LINE_A
    assert await b.added_with_key("u", "k2") is None and await b.added_with_key("v", "k1") is None
    with pytest.raises(CartConflict) as caught:
        await b.save_cart(
            CartWrite(user_id="u", lines=(LINE_A, LINE_B), version=1, add_key=("k1", LINE_B))
        )
    assert caught.value.current == StoredCart((LINE_A,), 1)
    assert await a.added_with_key("u", "k1") == LINE_A
    with pytest.raises(CartConflict):  # a conflict on the cart stores no key either
        await b.save_cart(
            CartWrite(user_id="u", lines=(LINE_B,), version=0, add_key=("k3", LINE_B))
        )
    assert await a.added_with_key("u", "k3") is None


# -- stock and checkout ---------------------------------------------------------------------


async def test_checkout_reserves_stock_and_empties_cart(nodes: Nodes) -> None:
    """Checkout stores the order, takes the stock, empties the cart (version + 1)."""
    a, b = nodes
    await a.save_cart(CartWrite(user_id="u", lines=(LINE_A, LINE_B), version=0))
    placed = await a.checkout(order("o1", "u", LINE_A, LINE_B), version=1)
    assert placed.order.order_id == "o1" and not placed.replayed
    assert await b.stock_levels() == {"A": 3, "B": 1}
    assert (await b.stock_levels()).get("A", 0) == 3 and (await b.stock_levels()).get(
        "nope", 0
    ) == 0
    assert await b.load_cart("u") == StoredCart((), 2)
    stored = await b.order("o1")
    assert stored is not None and stored.order == placed.order and stored.services == {}
    assert [s.order.order_id for s in await b.orders_for("u")] == ["o1"]
    assert await b.order_by_key("none") is None and await b.order("o2") is None
    assert a.statistics().transactions == 2


async def test_insufficient_stock_changes_nothing(nodes: Nodes) -> None:
    """A checkout asking more than there is (lines of one SKU summed) is refused whole."""
    a, b = nodes
    await a.save_cart(CartWrite(user_id="u", lines=(LINE_A, LINE_B), version=0))
    with pytest.raises(InsufficientStock) as caught:
        await b.checkout(order("o1", "u", LINE_A, LINE_B, LINE_B, LINE_B), version=1)
    assert (caught.value.sku, caught.value.requested, caught.value.available) == ("B", 3, 2)
    assert await a.stock_levels() == INITIAL_STOCK
    assert await a.load_cart("u") == StoredCart((LINE_A, LINE_B), 1)
    assert await a.order("o1") is None


async def test_stale_checkout_is_a_conflict(nodes: Nodes) -> None:
    """A checkout of a cart changed meanwhile is a CartConflict; nothing is taken."""
    a, b = nodes
    await a.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0))
    await a.save_cart(CartWrite(user_id="u", lines=(LINE_A, LINE_B), version=1))
    with pytest.raises(CartConflict) as caught:
        await b.checkout(order("o1", "u", LINE_A), version=1)
    assert caught.value.current.version == 2
    assert await a.stock_levels() == INITIAL_STOCK and await a.order("o1") is None


async def test_concurrent_checkouts_sell_exactly_the_stock(url: str) -> None:
    """40 one-unit checkouts split over two nodes against a stock of 10: exactly 10 sell."""
    one = CartLine("S", "Scarce", 100, 1)
    async with (
        open_postgres_store(url, {"S": 10}) as a,
        open_postgres_store(url, {"S": 10}) as b,
    ):
        users = [f"user{n}" for n in range(40)]
        for user in users:
            await a.save_cart(CartWrite(user_id=user, lines=(one,), version=0))
        sold: list[str] = []
        refused: list[str] = []

        async def buy(store: PostgresStore, user: str) -> None:
            try:
                await store.checkout(order(f"o-{user}", user, one), version=1)
            except InsufficientStock:
                refused.append(user)
            else:
                sold.append(user)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for n, user in enumerate(users):
                    nursery.start_soon(buy, (a, b)[n % 2], user)
        assert len(sold) == 10 and len(refused) == 30
        assert await b.stock_levels() == {"S": 0}
        assert sql(url, "SELECT count(*) FROM orders") == [(10,)]


async def test_idempotency_key_replays_and_refuses_other_users(nodes: Nodes) -> None:
    """The same key replays the user's order on any node; another user's use is refused."""
    a, b = nodes
    first = await a.checkout(order("o1", "u", LINE_A, key="k"), version=0)
    again = await b.checkout(order("o2", "u", LINE_B, key="k"), version=1)
    assert again.replayed and again.order == first.order
    with pytest.raises(IdempotencyKeyReused):
        await b.checkout(order("o3", "v", LINE_B, key="k"), version=0)
    assert await a.order_by_key("k") == first.order
    assert await a.stock_levels() == {"A": 3, "B": 2}


async def test_concurrent_checkouts_with_one_key(nodes: Nodes) -> None:
    """Two users' checkouts racing with one key: one order, the other refused, stock taken once."""
    a, b = nodes
    outcomes: list[object] = []

    async def buy(store: PostgresStore, user: str) -> None:
        try:
            outcomes.append(await store.checkout(order(f"o-{user}", user, LINE_A, key="k"),
                                                 version=0))
        except IdempotencyKeyReused as refused:
            outcomes.append(refused)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(buy, a, "u")
        nursery.start_soon(buy, b, "v")
    assert sorted(type(x).__name__ for x in outcomes) == ["IdempotencyKeyReused", "Placement"]
    assert (await a.stock_levels()).get("A", 0) == 3


async def test_orders_for_newest_first(nodes: Nodes) -> None:
    """A user's orders come newest first, ties of the timestamp in placing order."""
    a, b = nodes
    await a.checkout(order("o1", "u", LINE_A), version=0)
    await b.checkout(order("o2", "u", LINE_B), version=0)
    assert [s.order.order_id for s in await a.orders_for("u")] == ["o2", "o1"]


# -- the outbox ---------------------------------------------------------------------------


async def test_orders_of_one_node_are_claimed_by_another(nodes: Nodes) -> None:
    """Orders placed on A after register_service are handed to B's pending, in order."""
    a, b = nodes
    await a.checkout(order("o0", "u0", LINE_B), version=0)  # before: not queued
    await b.register_service("delivery")
    await a.register_service("delivery")  # again, from another node: no harm
    for n in (1, 2):
        await a.checkout(order(f"o{n}", f"u{n}", LINE_A), version=0)
    entries = await b.pending("delivery")
    assert [e.order.order_id for e in entries] == ["o1", "o2"]
    assert entries[0].seq < entries[1].seq and entries[0].order.lines == (LINE_A,)
    assert await b.pending("email") == []


async def test_a_claim_is_skipped_until_it_runs_out(nodes: Nodes, url: str) -> None:
    """Entries A claimed are not handed to B (nor to A again) until the claim expires."""
    a, b = nodes
    await a.register_service("delivery")
    for n in (1, 2, 3):
        await a.checkout(order(f"o{n}", f"u{n}", ONE_A), version=0)
    assert [e.order.order_id for e in await a.pending("delivery", limit=2)] == ["o1", "o2"]
    assert [e.order.order_id for e in await b.pending("delivery")] == ["o3"]
    assert await b.pending("delivery") == [] and await a.pending("delivery") == []
    sql(url, "UPDATE outbox SET claimed_until = now() - interval '1 second'")  # A died
    assert [e.order.order_id for e in await b.pending("delivery")] == ["o1", "o2", "o3"]


async def check_out(store: PostgresStore, order_id: str, user: str) -> None:
    """*user* checks out one unit of a SKU stocked plenty (any number of orders a user)."""
    await store.add_stock({"PLENTY": 1000})
    line = CartLine("PLENTY", "Plenty", 100, 1)
    await store.checkout(order(order_id, user, line), version=await store.cart_version(user))


async def test_a_users_later_orders_wait_for_the_claim_of_an_earlier_one(
    nodes: Nodes, url: str
) -> None:
    """Node B gets no later order of a user whose earlier order A holds, until A acks it or
    A's claim runs out; then B gets them, oldest first; other users' orders go on."""
    a, b = nodes
    for node in nodes:
        await node.register_service("delivery")
    for n in range(1, 4):  # interleaved, on both nodes: a1 b1 a2 b2 a3 b3
        for user in ("alice", "bob"):
            await check_out((a, b)[n % 2], f"{user[0]}{n}", user)
    [first] = await a.pending("delivery", limit=1)
    assert first.order.order_id == "a1"
    taken = await b.pending("delivery")
    assert [e.order.order_id for e in taken] == ["b1", "b2", "b3"]
    assert await b.pending("delivery") == []  # alice's a2, a3 wait for a1
    await a.ack("delivery", first, "dispatched")
    assert [e.order.order_id for e in await b.pending("delivery", limit=1)] == ["a2"]
    assert await a.pending("delivery") == []  # a3 waits for B's a2
    sql(url, "UPDATE outbox SET claimed_until = now() - interval '1 second' "
             "WHERE order_id = 'a2'")  # B died holding a2
    assert [e.order.order_id for e in await a.pending("delivery")] == ["a2", "a3"]


async def test_a_claim_under_way_elsewhere_holds_back_that_users_later_orders(
    nodes: Nodes, url: str
) -> None:
    """While another transaction holds a user's earliest row (a claim under way), a claim
    skips it and that user's later rows, and hands out the other users' rows."""
    a, b = nodes
    await a.register_service("delivery")
    for n, user in enumerate(("alice", "bob", "alice", "bob")):
        await check_out(a, f"o{n}", user)
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("SELECT 1 FROM outbox WHERE order_id = 'o0' FOR UPDATE")
        assert [e.order.order_id for e in await b.pending("delivery")] == ["o1", "o3"]
        other.execute("ROLLBACK")
    assert [e.order.order_id for e in await a.pending("delivery")] == ["o0", "o2"]


async def test_a_concurrent_claim_holding_some_users_leaves_the_others_to_the_next_claim(
    nodes: Nodes, url: str
) -> None:
    """While another node's claim of alice's and bob's oldest rows is under way (its
    transaction open), a claim of the same size hands out carol's rows after theirs, not
    nothing (their later rows, waiting for those claimed, must not fill its limit)."""
    a, b = nodes
    await a.register_service("delivery")
    for n in range(5):  # more than a claim of two looks at: a0 b0 a1 b1 ... a4 b4, c0 c1
        for user in ("alice", "bob"):
            await check_out(a, f"{user[0]}{n}", user)
    for n in range(2):
        await check_out(a, f"c{n}", "carol")
    with psycopg.connect(url) as other:  # a claim of two, not yet committed
        claimed = other.execute(
            CLAIM_OUTBOX, {"seconds": 60, "service": "delivery", "limit": 2}
        ).fetchall()
        assert [row[2] for row in claimed] == ["a0", "b0"]
        assert [e.order.order_id for e in await b.pending("delivery", limit=2)] == ["c0", "c1"]
        other.rollback()
    assert [e.order.order_id for e in await a.pending("delivery", limit=2)] == ["a0", "b0"]


async def test_an_unacknowledged_row_without_a_user_is_still_claimed(
    nodes: Nodes, url: str
) -> None:
    """A waiting row with no user_id (none should remain after migration 3) is claimed as
    its own user, never left waiting for good."""
    a, b = nodes
    await a.register_service("delivery")
    for n, user in enumerate(("alice", "alice")):
        await check_out(a, f"o{n}", user)
    sql(url, "UPDATE outbox SET user_id = NULL WHERE order_id = 'o1'")
    assert [e.order.order_id for e in await b.pending("delivery")] == ["o0", "o1"]


async def test_ack_records_the_first_status_only(nodes: Nodes, url: str) -> None:
    """An ack records status and time once; a repeat changes nothing; acked entries leave."""
    a, b = nodes
    await a.register_service("delivery")
    await a.register_service("email")
    await a.checkout(order("o1", "u", LINE_A), version=0)
    [entry] = await a.pending("delivery")
    await a.ack("delivery", entry, "dispatched")
    stored = await b.order("o1")
    assert stored is not None and list(stored.services) == ["delivery"]
    first = stored.services["delivery"]
    assert first.status == "dispatched" and first.at > 0
    await b.ack("delivery", entry, "again")
    assert await b.order("o1") == stored
    [listed] = await b.orders_for("u")
    assert listed.services == {"delivery": first}
    sql(url, "UPDATE outbox SET claimed_until = NULL")
    assert await b.pending("delivery") == []
    assert [e.order.order_id for e in await b.pending("email")] == ["o1"]


async def test_wait_for_outbox_wakes_on_another_nodes_checkout(nodes: Nodes) -> None:
    """B's wait_for_outbox returns after a checkout on A queued an order."""
    a, b = nodes
    await a.register_service("delivery")
    woken = trio.Event()

    async def wait() -> None:
        await b.wait_for_outbox()
        woken.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            assert not woken.is_set()
            await a.checkout(order("o1", "u", LINE_A), version=0)
            await woken.wait()


async def test_listener_reconnects_and_wakes_waiters(nodes: Nodes, url: str) -> None:
    """A killed listen connection is replaced; waiters wake then, and at later checkouts."""
    a, b = nodes
    await a.register_service("delivery")
    killed = b._listener.pid
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.wait_for_outbox)  # woken by the reconnection
            await trio.testing.wait_all_tasks_blocked()
            sql(url, f"SELECT pg_terminate_backend({killed})")
        assert b._listener.pid not in (0, killed)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.wait_for_outbox)
            await trio.testing.wait_all_tasks_blocked()
            await a.checkout(order("o1", "u", LINE_A), version=0)


async def test_racing_retries_of_one_checkout_place_one_order(nodes: Nodes) -> None:
    """The same user's checkout sent to both nodes at once with one key: one order, one replay."""
    a, b = nodes
    await a.save_cart(CartWrite(user_id="u", lines=(LINE_A,), version=0))
    placements = []

    async def buy(store: PostgresStore, order_id: str) -> None:
        placements.append(await store.checkout(order(order_id, "u", LINE_A, key="k"), version=1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(buy, a, "o1")
        nursery.start_soon(buy, b, "o2")
    assert sorted(p.replayed for p in placements) == [False, True]
    assert placements[0].order == placements[1].order
    assert (await a.stock_levels()).get("A", 0) == 3 and await a.load_cart("u") == StoredCart((), 2)
