"""Cart writes in batches: many carts' writes in one set-based transaction, the version
checks of views in one query, and what a batch that failed whole does next."""

from __future__ import annotations

import math

import attrs
import outcome
import trio

from trioshop.domain import DomainError
from trioshop.runtime import Ticket, may_retry
from trioshop.store.base import (
    ADD_KEY_RETENTION_SECONDS,
    NO_CART,
    CartConflict,
    CartWrite,
    FailureKind,
    StoredCart,
    StoreError,
    check_write_stock,
    settle_write,
)
from trioshop.store.batch import Batcher, Outcome
from trioshop.store.codec import decode_lines, encode_lines
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


def write_carts(conn: Connection, writes: list[CartWrite]) -> list[Outcome]:
    """Every write of *writes* in one transaction (see :func:`apply_writes`)."""
    with transaction(conn):
        return apply_writes(conn, writes)


def apply_writes(conn: Connection, writes: list[CartWrite]) -> list[Outcome]:
    """Every write of *writes*, each conditional on its version, in the caller's transaction.

    Statements per batch, not per write: one stock read for the adds' checks, an advisory
    lock a user taken in key order (two nodes' batches never deadlock, whether their carts
    exist yet or not), one read of the add keys already used, one UPDATE and one INSERT over
    arrays, one read of the carts that did not take their write, and one INSERT of the
    applied adds' keys. Waiting for a lock longer than :data:`LOCK_TIMEOUT` fails the
    batch. A write refused by its stock check, its version or its add key changes nothing;
    the others commit. A second write of one user in a batch (never from one node's actors)
    is answered "reload" (a conflict).
    """
    outcomes: list[Outcome | None] = [None] * len(writes)
    skus = sorted({w.stock_check[0] for w in writes if w.stock_check is not None})
    stock: dict[str, int] = {}
    if skus:
        stock = dict(conn.execute(
            "SELECT sku, available FROM stock WHERE sku = ANY(%s)", (skus,)
        ).fetchall())
    conn.execute(
        "SELECT pg_advisory_xact_lock(%s, k) FROM (SELECT DISTINCT hashtext(u) AS k "
        "FROM unnest(%s::text[]) AS u ORDER BY k OFFSET 0) AS keys",
        (CART_LOCK, sorted({w.user_id for w in writes})),
    )
    used = _used_keys(conn, writes)
    seen: set[str] = set()
    todo: set[int] = set()
    for i, write in enumerate(writes):
        try:
            check_write_stock(write, stock)
        except DomainError as refusal:
            outcomes[i] = outcome.Error(refusal)
            continue
        if write.user_id in seen:
            continue
        seen.add(write.user_id)
        if write.add_key is None or (write.user_id, write.add_key[0]) not in used:
            todo.add(i)
    chosen = [writes[i] for i in sorted(todo)]
    updates = [w for w in chosen if w.version > 0]
    inserts = [w for w in chosen if w.version == 0 and w.lines]
    written: set[str] = set()
    if updates:
        written.update(row[0] for row in conn.execute(
            "UPDATE carts c SET lines = v.lines::jsonb, version = c.version + 1, "
            "updated_at = now() "
            "FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS v(user_id, lines, version) "
            "WHERE c.user_id = v.user_id AND c.version = v.version RETURNING c.user_id",
            ([w.user_id for w in updates], [encode_lines(w.lines) for w in updates],
             [w.version for w in updates]),
        ).fetchall())
    if inserts:
        written.update(row[0] for row in conn.execute(
            "INSERT INTO carts (user_id, lines, version) "
            "SELECT v.user_id, v.lines::jsonb, 1 "
            "FROM unnest(%s::text[], %s::text[]) AS v(user_id, lines) ORDER BY v.user_id "
            "ON CONFLICT (user_id) DO NOTHING RETURNING user_id",
            ([w.user_id for w in inserts], [encode_lines(w.lines) for w in inserts]),
        ).fetchall())
    applied = {i for i in todo if writes[i].user_id in written}
    unsettled = [i for i, done in enumerate(outcomes) if done is None and i not in applied]
    current = _stored_carts(conn, sorted({writes[i].user_id for i in unsettled}))
    for i in applied:
        outcomes[i] = outcome.Value(writes[i].version + 1)
    for i in unsettled:
        stored = current.get(writes[i].user_id, NO_CART)
        if i in todo:  # its version or its empty cart decides (the stored one has moved on)
            outcomes[i] = outcome.capture(settle_write, writes[i], stored)
        else:
            outcomes[i] = outcome.Error(CartConflict(stored))
    _store_keys(conn, [w for w, done in zip(writes, outcomes, strict=True)
                       if w.add_key is not None and isinstance(done, outcome.Value)])
    return [result for result in outcomes if result is not None]


def _used_keys(conn: Connection, writes: list[CartWrite]) -> set[tuple[str, str]]:
    """The (user, add key) pairs of *writes* stored already, within the retention."""
    keyed = [(w.user_id, w.add_key[0]) for w in writes if w.add_key is not None]
    if not keyed:
        return set()
    rows = conn.execute(
        "SELECT a.user_id, a.key FROM add_keys a "
        "JOIN unnest(%s::text[], %s::text[]) AS v(user_id, key) USING (user_id, key) "
        "WHERE a.created_at > now() - make_interval(secs => %s)",
        (
            [user for user, _ in keyed], [key for _, key in keyed],
            float(ADD_KEY_RETENTION_SECONDS),
        ),
    ).fetchall()
    return {(row[0], row[1]) for row in rows}


def _stored_carts(conn: Connection, user_ids: list[str]) -> dict[str, StoredCart]:
    """The stored carts of *user_ids* that have a row."""
    if not user_ids:
        return {}
    rows = conn.execute(
        "SELECT user_id, lines::text, version FROM carts WHERE user_id = ANY(%s)", (user_ids,)
    ).fetchall()
    return {row[0]: StoredCart(decode_lines(row[1]), row[2]) for row in rows}


def _store_keys(conn: Connection, keyed: list[CartWrite]) -> None:
    """Store the add keys and answers of the applied *keyed* writes (an expired row of the
    same key is replaced)."""
    if keyed:
        conn.execute(
            "INSERT INTO add_keys (user_id, key, line) "
            "SELECT v.user_id, v.key, v.line::jsonb "
            "FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(user_id, key, line) "
            "ON CONFLICT (user_id, key) DO UPDATE "
            "SET line = excluded.line, created_at = excluded.created_at",
            ([w.user_id for w in keyed], [w.add_key[0] for w in keyed if w.add_key],
             [encode_lines((w.add_key[1],)) for w in keyed if w.add_key]),
        )


def cart_versions(conn: Connection, user_ids: list[str]) -> list[Outcome]:
    """The stored version of each cart of *user_ids* (0: none), in one query."""
    found = dict(conn.execute(
        "SELECT user_id, version FROM carts WHERE user_id = ANY(%s)", (sorted(set(user_ids)),)
    ).fetchall())
    return [outcome.Value(int(found.get(user_id, 0))) for user_id in user_ids]



@attrs.frozen
class _Queued:
    """A cart write waiting for its batch, and when its request gives up (Trio time)."""

    write: CartWrite
    deadline: float


def _still_waited_for(
    queued: list[_Queued], live: list[int], answers: dict[int, Outcome], failure: StoreError
) -> list[int]:
    """The writes of *live* whose requests may still retry; the others answered *failure*."""
    kept = []
    for i in live:
        if may_retry(queued[i].deadline):
            kept.append(i)
        else:
            answers[i] = outcome.Error(failure)
    return kept


@attrs.define
class CartWrites:
    """The cart writes and the version checks of views on ``db``, in batches: one worker
    trip and one transaction (or query) for every cart waiting (bench/README.md). Run with
    ``await nursery.start(writes.run)``.

    A batch that fails whole goes on as :func:`batch_policy` says. A user whose write alone
    waited out a lock is remembered as stuck: its writes then skip the batches for
    ``STUCK_SECONDS``, so one stuck cart never again holds up the other carts' batches.
    """

    db: Database
    # Users whose cart write waited out a lock alone, and until when their writes skip the
    # batches (trio time), oldest first.
    _stuck: dict[str, float] = attrs.field(factory=dict, init=False, repr=False)
    _writes: Batcher[_Queued] = attrs.field(init=False)
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

        Raises what refused it: :class:`CartConflict`, a domain refusal, or StoreError. A
        batch that failed whole is tried again for *write* only until *ticket*'s deadline.
        """
        if self._is_stuck(write.user_id):
            return await self._write_alone(write, ticket)
        deadline = math.inf if ticket is None else ticket.deadline
        return int(await self._writes.submit(_Queued(write, deadline), ticket))

    async def version(self, user_id: str) -> int:
        """The stored version of *user_id*'s cart (0: none)."""
        return int(await self._versions.submit(user_id))

    async def _write(self, queued: list[_Queued]) -> list[Outcome]:
        """*queued* in one transaction; a lone write that waited out a lock marks its user."""
        writes = [q.write for q in queued]
        try:
            return await self.db.run_held(
                lambda conn: write_carts(conn, writes), writes=len(writes),
                deadline=max(q.deadline for q in queued),
            )
        except StoreError as exc:
            if len(writes) == 1:
                self._note_stuck(writes[0].user_id, exc)
            raise

    async def _apply(self, queued: list[_Queued]) -> list[Outcome]:
        """*queued* as one batch; if it fails whole, on as :func:`batch_policy` says, and a
        write whose request's deadline has passed is answered that failure, not tried again."""
        answers: dict[int, Outcome] = {}
        live = list(range(len(queued)))
        failure = StoreError("the batch failed")
        for attempt in range(self.db.size + 1):
            try:
                answers.update(zip(live, await self._write([queued[i] for i in live]),
                                   strict=True))
                return [answers[i] for i in range(len(queued))]
            except StoreError as exc:
                step, failure = batch_policy(exc.kind), exc
                if step is Step.FAIL or (step is Step.SPLIT and len(live) == 1):
                    raise
                live = _still_waited_for(queued, live, answers, exc)
                if step is Step.SPLIT or not live:
                    break
                if attempt == self.db.size:
                    raise
        # Refused for what one write held, or a lock waited on too long (nothing was
        # committed): one at a time, so that write fails alone and the others go through.
        for done, i in enumerate(live):
            if not _still_waited_for(queued, [i], answers, failure):
                continue
            try:
                answers.update(zip([i], await self._write([queued[i]]), strict=True))
            except StoreError as exc:
                if batch_policy(exc.kind) is Step.FAIL:  # the rest would fail alike, slowly
                    answers.update((j, outcome.Error(exc)) for j in live[done:])
                    break
                answers[i] = outcome.Error(exc)
        return [answers[i] for i in range(len(queued))]

    @_writes.default
    def _cart_writer(self) -> Batcher[_Queued]:
        return Batcher(
            self._apply, gate=self.db.gates.writing, kind="postgres", operation="cart writes"
        )

    @_versions.default
    def _version_reader(self) -> Batcher[str]:
        async def apply(user_ids: list[str]) -> list[Outcome]:
            return await self.db.run_held(lambda conn: cart_versions(conn, user_ids))

        return Batcher(
            apply, gate=self.db.gates.reading, kind="postgres", operation="version checks"
        )

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
