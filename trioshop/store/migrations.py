"""Versioned schema migrations, applied in order at start (PRAGMA user_version)."""

from __future__ import annotations

import sqlite3

# Append only: a migration that shipped is never edited, a change is a new entry.
MIGRATIONS: list[str] = [
    # 1: carts, stock, orders, the outbox and per-service delivery state
    """
    CREATE TABLE carts (
        user_id    TEXT PRIMARY KEY,
        lines      TEXT NOT NULL,          -- JSON [[sku, title, price_cents, quantity], ...]
        updated_at REAL NOT NULL
    );
    CREATE TABLE stock (
        sku       TEXT PRIMARY KEY,
        available INTEGER NOT NULL CHECK (available >= 0)
    );
    CREATE TABLE orders (
        order_id        TEXT PRIMARY KEY,
        user_id         TEXT NOT NULL,
        lines           TEXT NOT NULL,
        total_cents     INTEGER NOT NULL,
        created_at      INTEGER NOT NULL,
        idempotency_key TEXT UNIQUE
    );
    CREATE INDEX orders_by_user ON orders (user_id, created_at);
    CREATE TABLE outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id   TEXT NOT NULL REFERENCES orders (order_id),
        created_at REAL NOT NULL
    );
    CREATE TABLE service_cursors (
        service  TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL
    );
    CREATE TABLE order_status (
        order_id TEXT NOT NULL REFERENCES orders (order_id),
        service  TEXT NOT NULL,
        status   TEXT NOT NULL,
        at       REAL NOT NULL,
        PRIMARY KEY (order_id, service)
    );
    """,
    # 2: idempotency keys of adds, with the answer each got
    """
    CREATE TABLE add_keys (
        user_id    TEXT NOT NULL,
        key        TEXT NOT NULL,
        line       TEXT NOT NULL,          -- JSON [[sku, title, price_cents, quantity]]
        created_at REAL NOT NULL,
        PRIMARY KEY (user_id, key)
    );
    CREATE INDEX add_keys_by_age ON add_keys (created_at);
    """,
    # 3: cart versions: every write is conditional on the version its writer read
    """
    ALTER TABLE carts ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
    """,
    # 4: the W3C traceparent of the checkout that placed an order (NULL: untraced, or older)
    """
    ALTER TABLE orders ADD COLUMN trace_parent TEXT;
    """,
]


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: list[str] = MIGRATIONS) -> int:
    """Apply every migration newer than the database, each in its own transaction.

    Returns the resulting version. Raises :class:`RuntimeError` for a database newer than
    this code (downgrades are refused rather than guessed at).
    """
    version = schema_version(conn)
    if version > len(migrations):
        raise RuntimeError(
            f"the database is at schema version {version}, newer than this trioshop "
            f"({len(migrations)}); run a newer trioshop or point --data-dir elsewhere"
        )
    for number, script in enumerate(migrations[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return schema_version(conn)
