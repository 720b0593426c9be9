"""PostgreSQL for tests: a fresh schema per use on the test server, skipped when it is absent.

Tests read ``TRIOSHOP_TEST_DATABASE`` (default: the local server, database ``test``). Where no
PostgreSQL answers they skip with the reason, except when ``CI`` is set: then they fail, so
CI cannot pass without them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import psycopg

from tests.helpers import required
from trioshop.testing.postgres import DEFAULT_URL, scratch_schema, with_schema


def server_url() -> str:
    """The test server's URL (``TRIOSHOP_TEST_DATABASE`` or the local default)."""
    return os.environ.get("TRIOSHOP_TEST_DATABASE", DEFAULT_URL)


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A new, empty schema on the test server; yields a URL selecting it; dropped at the end."""
    url = server_url()
    with ExitStack() as stack:
        try:
            schema = stack.enter_context(scratch_schema(url, "trioshop_test"))
        except psycopg.Error as exc:
            reason = f"{url}: {exc}".strip()
            required(
                f"no PostgreSQL to test against: {reason}",
                ci_message=f"PostgreSQL is required in CI: {reason}",
            )
        yield with_schema(url, schema)
