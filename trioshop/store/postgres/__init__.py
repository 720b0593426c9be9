"""The PostgreSQL store: one database shared by many trioshop nodes, each change one transaction."""

from trioshop.store.postgres.pool import LOCK_TIMEOUT, POOL_SIZE
from trioshop.store.postgres.sql import PRUNE_CHUNK
from trioshop.store.postgres.store import CLAIM_SECONDS, PostgresStore, open_postgres_store

__all__ = [
    "CLAIM_SECONDS",
    "LOCK_TIMEOUT",
    "POOL_SIZE",
    "PRUNE_CHUNK",
    "PostgresStore",
    "open_postgres_store",
]
