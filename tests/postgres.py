"""PostgreSQL for tests: a fresh schema per use on the test server, skipped when it is absent.

Tests read ``TRIOSHOP_TEST_DATABASE`` (default: the local server, database ``test``). Where no
PostgreSQL answers they skip with the reason, except when ``CI`` is set: then they fail, so
CI cannot pass without them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    """The test server's URL (``TRIOSHOP_TEST_DATABASE`` or the local default)."""
    return os.environ.get("TRIOSHOP_TEST_DATABASE", DEFAULT_URL)


def with_schema(url: str, schema: str) -> str:
    """*url* with libpq ``options=-csearch_path=schema`` appended."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"no PostgreSQL to test against: {reason}")


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A new, empty schema on the test server; yields a URL selecting it; dropped at the end."""
    url = server_url()
    schema = f"trioshop_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        _unavailable(f"{url}: {exc}".strip())
        raise  # not reached: skip and fail raise
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield with_schema(url, schema)
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
