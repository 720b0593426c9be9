"""The PostgreSQL store's versioned schema, migrated once per schema however many nodes start."""

from __future__ import annotations

from typing import Any

import psycopg

# The first key of the advisory lock that serialises migrations; the second is a hash of the
# current schema, so nodes sharing a schema migrate one at a time and other schemas never wait.
MIGRATION_LOCK = 0x7472696F  # "trio"

# Append only: a migration that shipped is never edited, a change is a new entry. Tables are
# created in the current schema (the connection's search_path), so names are unqualified.
MIGRATIONS: list[str] = [
    # 1: carts, stock, orders, the outbox (one row per order and service), services, add keys
    """
    CREATE TABLE carts (
        user_id    text PRIMARY KEY,
        lines      jsonb NOT NULL,        -- [[sku, title, price_cents, quantity], ...]
        version    bigint NOT NULL,       -- +1 per write, never reset: an emptied cart stays
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE stock (
        sku       text PRIMARY KEY,
        available bigint NOT NULL CHECK (available >= 0)
    );
    CREATE TABLE orders (
        order_id        text PRIMARY KEY,
        user_id         text NOT NULL,
        lines           jsonb NOT NULL,
        total_cents     bigint NOT NULL,
        created_at      bigint NOT NULL,  -- unix seconds, the order's own timestamp
        idempotency_key text,
        placed          bigint GENERATED ALWAYS AS IDENTITY,  -- ties of created_at, newest last
        CONSTRAINT orders_idempotency_key UNIQUE (idempotency_key)
    );
    CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, placed DESC);
    CREATE TABLE services (
        name text PRIMARY KEY
    );
    CREATE TABLE outbox (
        seq           bigserial NOT NULL UNIQUE,
        order_id      text NOT NULL REFERENCES orders (order_id),
        service       text NOT NULL,
        status        text,               -- NULL until the service acknowledged the order
        at            timestamptz,        -- when it did
        claimed_until timestamptz,        -- a node's lease on the entry, NULL if never claimed
        PRIMARY KEY (order_id, service)
    );
    CREATE INDEX outbox_unacked ON outbox (service, seq) WHERE status IS NULL;
    CREATE TABLE add_keys (
        user_id    text NOT NULL,
        key        text NOT NULL,
        line       jsonb NOT NULL,        -- [[sku, title, price_cents, quantity]]
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (user_id, key)
    );
    CREATE INDEX add_keys_by_age ON add_keys (created_at);
    """,
    # 2: the W3C traceparent of the checkout that placed an order (NULL: untraced, or older)
    """
    ALTER TABLE orders ADD COLUMN trace_parent text;
    """,
    # 3: the outbox knows each row's user, so a claim can keep a user's orders in order.
    # Safe in a rolling restart: nodes still on the previous version insert rows without
    # user_id, so the column stays nullable and a trigger fills it from the order; only the
    # unacknowledged rows (the ones a claim reads) are backfilled, the acknowledged ones (never
    # deleted, however many) keep NULL. The exclusive lock lasts as long as that backfill.
    """
    ALTER TABLE outbox ADD COLUMN user_id text;
    CREATE FUNCTION outbox_user_id() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        IF NEW.user_id IS NULL THEN
            NEW.user_id := (SELECT o.user_id FROM orders o WHERE o.order_id = NEW.order_id);
        END IF;
        RETURN NEW;
    END
    $$;
    CREATE TRIGGER outbox_user_id BEFORE INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_user_id();
    UPDATE outbox b SET user_id = o.user_id FROM orders o
    WHERE o.order_id = b.order_id AND b.status IS NULL;
    CREATE INDEX outbox_unacked_by_user ON outbox (service, user_id, seq) WHERE status IS NULL;
    """,
]

# How long a migration waits for a table's lock (the advisory lock has no bound): while an
# ALTER TABLE waits, every statement on that table queues behind it, so a migration that
# cannot have the lock at once fails the node's start (retried) rather than stall checkouts
# past their own lock timeout (pool.LOCK_TIMEOUT, 1 s).
MIGRATION_LOCK_TIMEOUT = "500ms"


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The latest migration recorded in the current schema (0: none, or no ``schema_version``)."""
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return 0 if found is None else int(found[0])


def migrate(conn: psycopg.Connection[Any], migrations: list[str] = MIGRATIONS) -> int:
    """Apply every migration newer than the schema, each in its own transaction; the result.

    *conn* must be in autocommit mode. Each transaction first takes the migration advisory
    lock, then reads the version, so nodes starting together apply each migration once: the
    others wait, then find it recorded. A migration waits at most
    :data:`MIGRATION_LOCK_TIMEOUT` for a table's lock (psycopg's ``LockNotAvailable``: start
    again once the table's long transaction ended). Raises :class:`RuntimeError` for a schema
    newer than this code, and psycopg's errors as they come (the caller turns them into its own).
    """
    while True:
        with conn.transaction():
            schema = conn.execute("SELECT current_schema()").fetchone()
            if schema is None or schema[0] is None:
                raise RuntimeError("the search_path names no existing schema to create tables in")
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))",
                (MIGRATION_LOCK,),
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version    integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            version = schema_version(conn)
            if version > len(migrations):
                raise RuntimeError(
                    f"the database schema is at version {version}, newer than this trioshop "
                    f"({len(migrations)}); run a newer trioshop or use another schema"
                )
            if version == len(migrations):
                return version
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (MIGRATION_LOCK_TIMEOUT,))
            conn.execute(migrations[version])
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version + 1,))
