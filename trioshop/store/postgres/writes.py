"""Cart writes in batches: many carts' writes in one set-based transaction, the version
checks of views in one query, and what a batch that failed whole does next."""

from __future__ import annotations

import attrs
import outcome
import trio

from trioshop.domain import DomainError, check_stock
from trioshop.runtime import Ticket
from trioshop.store.base import NO_CART, CartConflict, FailureKind, StoredCart, StoreError
from trioshop.store.batch import Batcher, Outcome
from trioshop.store.codec import EMPTY_LINES, decode_lines
from trioshop.store.postgres.errors import Step, batch_policy, transaction
from trioshop.store.postgres.gates import cart_row
from trioshop.store.postgres.pool import Database
from trioshop.store.postgres.sql import Connection

# The first key of the advisory locks a batch of cart writes takes, one a user (the second
# key is a hash of the user id), in key order: two nodes' batches never deadlock.
CART_LOCK = 0x63617274  # "cart"
# After a lock timeout alone, a user's cart writes skip the batches (each goes alone, beside
# them) for this long: a stuck cart never again holds up the other carts' batches.
STUCK_SECONDS = 10.0
# The most users remembered as stuck at once (the oldest are forgotten first).
STUCK_MAX = 1000


@attrs.frozen
class CartWrite:
    """One cart write of a batch: :meth:`PostgresStore.save_cart` without an add key."""

    user_id: str
    payload: str
    version: int
    stock_check: tuple[str, int] | None


def write_carts(conn: Connection, writes: list[CartWrite]) -> list[Outcome]:
    """Every write of *writes* in one transaction, each conditional on its version.

    Statements per batch, not per write: one stock read for the adds' checks, an advisory
    lock a user taken in key order (two nodes' batches never deadlock, whether their carts
    exist yet or not), one UPDATE and one INSERT over arrays, and one read of the carts that
    conflicted. Waiting for a lock longer than :data:`LOCK_TIMEOUT` fails the batch. A write
    refused by its stock check or its version changes nothing; the others commit.
    """
    outcomes: list[Outcome | None] = [None] * len(writes)
    with transaction(conn):
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
                    outcomes[i] = outcome.Error(refusal)
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
        outcomes[i] = outcome.Value(writes[i].version + 1)
    for i in unsettled:
        write, stored = writes[i], current.get(writes[i].user_id, NO_CART)
        if i in todo and write.version == 0 and write.payload == EMPTY_LINES and not stored.version:
            outcomes[i] = outcome.Value(0)  # nothing stored, nothing to store
        else:
            outcomes[i] = outcome.Error(CartConflict(stored))
    return [result for result in outcomes if result is not None]


def cart_versions(conn: Connection, user_ids: list[str]) -> list[Outcome]:
    """The stored version of each cart of *user_ids* (0: none), in one query."""
    found = dict(conn.execute(
        "SELECT user_id, version FROM carts WHERE user_id = ANY(%s)", (sorted(set(user_ids)),)
    ).fetchall())
    return [outcome.Value(int(found.get(user_id, 0))) for user_id in user_ids]



@attrs.define
class CartWrites:
    """The cart writes without an add key and the version checks of views on ``db``, in
    batches: one worker trip and one transaction (or query) for every cart waiting
    (bench/README.md). Run with ``await nursery.start(writes.run)``.

    A batch that fails whole goes on as :func:`batch_policy` says. A user whose write alone
    waited out a lock is remembered as stuck: its writes then skip the batches for
    ``STUCK_SECONDS``, so one stuck cart never again holds up the other carts' batches.
    """

    db: Database
    # Users whose cart write waited out a lock alone, and until when their writes skip the
    # batches (trio time), oldest first.
    _stuck: dict[str, float] = attrs.field(factory=dict, init=False, repr=False)
    _writes: Batcher[CartWrite] = attrs.field(init=False)
    _versions: Batcher[str] = attrs.field(init=False)

    @property
    def batches(self) -> int:
        """Batches of cart writes applied so far."""
        return self._writes.batches

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve writes and version checks until cancelled; ready at once."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._writes.run)
            await nursery.start(self._versions.run)
            task_status.started()

    async def save(self, write: CartWrite, ticket: Ticket | None) -> int:
        """Apply *write* (in a batch, or alone if its user is stuck); the cart's new version.

        Raises what refused it: :class:`CartConflict`, a domain refusal, or StoreError.
        """
        if self._is_stuck(write.user_id):
            return await self._write_alone(write, ticket)
        return int(await self._writes.submit(write, ticket))

    async def version(self, user_id: str) -> int:
        """The stored version of *user_id*'s cart (0: none)."""
        return int(await self._versions.submit(user_id))

    @_writes.default
    def _cart_writer(self) -> Batcher[CartWrite]:
        async def write(writes: list[CartWrite]) -> list[Outcome]:
            try:
                return await self.db.run_held(
                    lambda conn: write_carts(conn, writes), writes=len(writes)
                )
            except StoreError as exc:
                if len(writes) == 1:
                    self._note_stuck(writes[0].user_id, exc)
                raise

        async def apply(writes: list[CartWrite]) -> list[Outcome]:
            for attempt in range(self.db.size + 1):
                try:
                    return await write(writes)
                except StoreError as exc:
                    step = batch_policy(exc.kind)
                    if step is Step.FAIL or (step is Step.RETRY and attempt == self.db.size):
                        raise
                    if step is Step.SPLIT:
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
                    if batch_policy(exc.kind) is Step.FAIL:  # the rest would fail alike, slowly
                        return outcomes + [outcome.Error(exc) for _ in writes[done:]]
                    outcomes.append(outcome.Error(exc))
            return outcomes

        return Batcher(apply, gate=self.db.gates.writing)

    @_versions.default
    def _version_reader(self) -> Batcher[str]:
        async def apply(user_ids: list[str]) -> list[Outcome]:
            return await self.db.run_held(lambda conn: cart_versions(conn, user_ids))

        return Batcher(apply, gate=self.db.gates.reading)

    def _note_stuck(self, user_id: str, exc: StoreError) -> None:
        """Remember *user_id* as stuck if *exc* is a lock (or statement) timeout of its write
        alone: its next writes skip the batches for ``STUCK_SECONDS``."""
        if exc.kind is FailureKind.LOCKED:
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

    async def _write_alone(self, write: CartWrite, ticket: Ticket | None) -> int:
        """A stuck user's cart write, beside the batches: only it waits for its row."""
        try:
            [result] = await self.db.run(
                lambda conn: write_carts(conn, [write]), ticket=ticket, writes=1,
                rows=[cart_row(write.user_id)],
            )
        except StoreError as exc:
            self._note_stuck(write.user_id, exc)
            raise
        self._stuck.pop(write.user_id, None)
        return int(result.unwrap())
