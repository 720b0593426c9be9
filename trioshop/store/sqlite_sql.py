"""The SQL of the SQLite store's reads and writes of carts, stock and orders on one
connection (the writer's, inside its transaction, or the reader's)."""

from __future__ import annotations

import sqlite3
import time

from trioshop.domain import CartLine, Order, ServiceOutcome
from trioshop.store.base import (
    ADD_KEY_RETENTION_SECONDS,
    NO_CART,
    CartWrite,
    StoredCart,
    check_write_stock,
    settle_write,
)
from trioshop.store.codec import decode_lines, encode_lines


def order_from_row(row: sqlite3.Row) -> Order:
    return Order(
        row["order_id"], row["user_id"], decode_lines(row["lines"]), row["total_cents"],
        row["created_at"], row["idempotency_key"],
    )


def stored_cart(conn: sqlite3.Connection, user_id: str) -> StoredCart:
    row = conn.execute("SELECT lines, version FROM carts WHERE user_id = ?", (user_id,)).fetchone()
    return NO_CART if row is None else StoredCart(decode_lines(row[0]), row[1])


def write_cart(conn: sqlite3.Connection, write: CartWrite) -> int:
    """Apply *write* in the writer's transaction (this process alone writes: what it reads
    stays true until it commits); the cart's new version, or the refusal."""
    user_id = write.user_id
    if write.stock_check is not None:
        check_write_stock(write, stock_of(conn, [write.stock_check[0]]))
    key_used = write.add_key is not None and (
        added_with_key(conn, user_id, write.add_key[0]) is not None
    )
    version = settle_write(write, stored_cart(conn, user_id), key_used=key_used)
    if version != write.version:  # an emptied cart keeps its row
        conn.execute(
            "INSERT INTO carts (user_id, lines, updated_at, version) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET lines = excluded.lines, "
            "updated_at = excluded.updated_at, version = excluded.version",
            (user_id, encode_lines(write.lines), time.time(), version),
        )
    if write.add_key is not None:
        conn.execute(
            "INSERT OR REPLACE INTO add_keys (user_id, key, line, created_at) "
            "VALUES (?, ?, ?, ?)",
            (user_id, write.add_key[0], encode_lines((write.add_key[1],)), time.time()),
        )
    return version


def added_with_key(conn: sqlite3.Connection, user_id: str, key: str) -> CartLine | None:
    """The line an add with *key* answered, if it was made within the retention time."""
    row = conn.execute(
        "SELECT line FROM add_keys WHERE user_id = ? AND key = ? AND created_at > ?",
        (user_id, key, time.time() - ADD_KEY_RETENTION_SECONDS),
    ).fetchone()
    return None if row is None else decode_lines(row[0])[0]


def order_by_key(conn: sqlite3.Connection, key: str) -> Order | None:
    row = conn.execute("SELECT * FROM orders WHERE idempotency_key = ?", (key,)).fetchone()
    return None if row is None else order_from_row(row)


def prune_add_keys(conn: sqlite3.Connection, retention: float) -> int:
    return conn.execute(
        "DELETE FROM add_keys WHERE created_at <= ?", (time.time() - retention,)
    ).rowcount


def stock_of(conn: sqlite3.Connection, skus: list[str]) -> dict[str, int]:
    """The stock of each of *skus* that is stocked."""
    rows = conn.execute(
        f"SELECT sku, available FROM stock WHERE sku IN ({','.join('?' * len(skus))})", skus
    )
    return {r["sku"]: r["available"] for r in rows}


def service_outcomes(conn: sqlite3.Connection, order_id: str) -> dict[str, ServiceOutcome]:
    rows = conn.execute(
        "SELECT service, status, at FROM order_status WHERE order_id = ? ORDER BY service",
        (order_id,),
    )
    return {row["service"]: ServiceOutcome(row["status"], row["at"]) for row in rows}
