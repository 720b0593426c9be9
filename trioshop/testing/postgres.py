"""Scratch PostgreSQL schemas for tests and benches: create one, select it in a URL, drop it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def with_schema(url: str, schema: str) -> str:
    """*url* with libpq ``options=-csearch_path=<schema>`` appended (URL-encoded)."""
    separator = "&" if urlsplit(url).query else ("" if url.endswith("?") else "?")
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def scratch_schema(admin_url: str, prefix: str, *, keep: bool = False) -> Iterator[str]:
    """A new schema ``<prefix>_<random hex>`` on *admin_url*; yields its name; dropped (with
    its tables) at the end unless *keep*."""
    schema = f"{prefix}_{secrets.token_hex(6)}"
    name = sql.Identifier(schema)
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
    try:
        yield schema
    finally:
        if not keep:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(name))
