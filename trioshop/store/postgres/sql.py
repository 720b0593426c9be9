"""The SQL of the store's reads and writes of carts, stock and orders on one connection."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import psycopg

from trioshop.domain import Order, ServiceOutcome, check_stock, quantities
from trioshop.runtime import attempts
from trioshop.store.base import (
    NO_CART,
    StoredCart,
    StoredOrder,
    StoreError,
)
from trioshop.store.codec import decode_lines

Connection = psycopg.Connection[Any]
Row = tuple[Any, ...]

# Old add keys deleted a statement (a statement must end within STATEMENT_TIMEOUT).
PRUNE_CHUNK = 10_000
KEY_CONSTRAINT = "orders_idempotency_key"
ORDER_COLUMNS = (
    "o.order_id, o.user_id, o.lines::text, o.total_cents, o.created_at, o.idempotency_key"
)
WITH_OUTCOMES = (
    f"SELECT {ORDER_COLUMNS}, b.service, b.status, extract(epoch FROM b.at)::float8 "
    "FROM orders o LEFT JOIN outbox b ON b.order_id = o.order_id AND b.status IS NOT NULL "
)

# Claim a service's next outbox rows for a while, oldest first, keeping each user's orders in
# order: a row goes only with every older unacknowledged row of its user (same service) in
# the same claim, so no node is handed a user's later order while an earlier one is claimed
# elsewhere (until that claim runs out) or is being claimed elsewhere right now.
# `candidates` takes a row only if its user's oldest unacknowledged row (the head: one probe
# of outbox_unacked_by_user) is neither claimed (committed) nor locked by a claim under way:
# the head is locked here with SKIP LOCKED, so of two claims at once the first to reach a
# user's head has that user, and the other passes over all of the user's rows. (Checking
# only the committed claim let two nodes woken by the same notification race: the second
# skipped the first's locked rows, took those users' later rows up to its LIMIT, dropped
# them all in `chosen`, and claimed nothing while other users' orders waited for the next
# poll.) The head is older than the row, so unless it is claimed or locked elsewhere it is
# a candidate itself, already locked here. `chosen` keeps the rule whatever else holds a
# row: it drops a row whose older row is not among the candidates. A row without a user
# (only rows acknowledged before migration 3 have none) goes as its own user, unordered.
# Measured with EXPLAIN ANALYZE on 10,000 unacknowledged rows of 2,000 users, limit 10
# (median of 20, three runs): 0.33-0.34 ms (the claim checking only committed claims:
# 0.32-0.34 ms; without the per-user rule: 0.25-0.26 ms); with the oldest 1,000 rows claimed
# by another node, 0.54-0.57 ms (0.53-0.54 ms; 0.47-0.49 ms); while another node's claim of
# 10 is under way, 0.47-0.50 ms (0.41-0.48 ms). With a backlog led by 5 users of 20 orders
# each and a claim of 10 under way, a second claim of 10 gets 10 other users' orders (the
# claim checking only committed claims got none).
CLAIM_OUTBOX = (
    "WITH candidates AS MATERIALIZED ("
    " SELECT b.order_id, b.user_id, b.seq FROM outbox b"
    " WHERE b.service = %(service)s AND b.status IS NULL"
    " AND (b.claimed_until IS NULL OR b.claimed_until < now())"
    " AND (b.user_id IS NULL OR EXISTS (SELECT 1 FROM (SELECT h.seq, h.claimed_until FROM outbox h"
    "  WHERE h.service = b.service AND h.user_id = b.user_id AND h.status IS NULL"
    "  ORDER BY h.seq LIMIT 1) head WHERE coalesce(head.claimed_until, '-infinity') < now()"
    "  AND EXISTS (SELECT 1 FROM outbox l WHERE l.seq = head.seq FOR UPDATE SKIP LOCKED)))"
    " ORDER BY b.seq LIMIT %(limit)s FOR UPDATE OF b SKIP LOCKED), "
    "chosen AS ("
    " SELECT c.order_id FROM candidates c"
    " WHERE NOT EXISTS (SELECT 1 FROM outbox h WHERE h.service = %(service)s"
    "  AND h.user_id = c.user_id AND h.status IS NULL AND h.seq < c.seq"
    "  AND h.order_id NOT IN (SELECT order_id FROM candidates))), "
    "claimed AS ("
    " UPDATE outbox u SET claimed_until = now() + make_interval(secs => %(seconds)s)"
    " FROM chosen WHERE u.service = %(service)s AND u.order_id = chosen.order_id"
    " RETURNING u.seq, u.order_id) "
    f"SELECT c.seq, o.trace_parent, {ORDER_COLUMNS} "
    "FROM claimed c JOIN orders o USING (order_id) ORDER BY c.seq"
)

# A conditional stock decrement (checkout) that failed while the figure read just after
# suffices: the stock rose in between; tries in all, none after the first past the
# request's deadline. They run inside one transaction on a worker thread.
STOCK_ATTEMPTS = 3


def order_of(row: Row) -> Order:
    return Order(row[0], row[1], decode_lines(row[2]), row[3], row[4], row[5])


def with_outcomes(rows: list[Row]) -> list[StoredOrder]:
    """Rows of :data:`WITH_OUTCOMES` (one per order and acknowledged service), grouped."""
    found: dict[str, tuple[Order, dict[str, ServiceOutcome]]] = {}
    for row in rows:
        order_id = row[0]
        if order_id not in found:
            found[order_id] = (order_of(row), {})
        if row[6] is not None:
            found[order_id][1][row[6]] = ServiceOutcome(row[7], row[8])
    return [StoredOrder(order, outcomes) for order, outcomes in found.values()]


def stored_cart(conn: Connection, user_id: str) -> StoredCart:
    row = conn.execute(
        "SELECT lines::text, version FROM carts WHERE user_id = %s", (user_id,)
    ).fetchone()
    return NO_CART if row is None else StoredCart(decode_lines(row[0]), row[1])


def available(conn: Connection, sku: str) -> int:
    """The units of *sku* in stock now (0 for a SKU never stocked)."""
    row = conn.execute("SELECT available FROM stock WHERE sku = %s", (sku,)).fetchone()
    return 0 if row is None else int(row[0])


def order_by_key(conn: Connection, key: str) -> Order | None:
    row = conn.execute(
        f"SELECT {ORDER_COLUMNS} FROM orders o WHERE o.idempotency_key = %s", (key,)
    ).fetchone()
    return None if row is None else order_of(row)


def take_stock(conn: Connection, order: Order, until: float = math.inf) -> None:
    """Take every line's quantity from stock, SKU by SKU in name order (no deadlocks between
    checkouts); :class:`InsufficientStock` as soon as one SKU has too little. No retry
    starts after *until* (the request's deadline on ``time.monotonic``'s clock)."""
    wanted = quantities(order.lines)
    for sku in sorted(wanted):
        for _ in attempts(STOCK_ATTEMPTS, until, clock=time.monotonic):
            taken = conn.execute(
                "UPDATE stock SET available = available - %s WHERE sku = %s AND available >= %s",
                (wanted[sku], sku, wanted[sku]),
            ).rowcount
            if taken:
                break
            # The domain's rule makes the refusal; should it not refuse, stock rose meanwhile.
            check_stock(sku, wanted[sku], available(conn, sku))
        else:
            raise StoreError(f"the stock of {sku} kept changing during checkout; retry")


def delete_old_add_keys(conn: Connection, retention: float) -> int:
    """Delete the add keys older than *retention* seconds, :data:`PRUNE_CHUNK` a statement
    (each well within :data:`STATEMENT_TIMEOUT`, however many there are); how many."""
    pruned = 0
    while True:
        deleted = conn.execute(
            "DELETE FROM add_keys WHERE (user_id, key) IN (SELECT user_id, key FROM add_keys "
            "WHERE created_at <= now() - make_interval(secs => %s) LIMIT %s)",
            (retention, PRUNE_CHUNK),
        ).rowcount
        pruned += deleted
        if deleted < PRUNE_CHUNK:
            return pruned


def seed_stock(conn: Connection, initial: Mapping[str, int]) -> None:
    if initial:
        conn.execute(
            "INSERT INTO stock (sku, available) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[]) ON CONFLICT (sku) DO NOTHING",
            (list(initial), list(initial.values())),
        )

