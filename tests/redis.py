"""Redis for tests: the shared server with a fresh stream per use, or a private server.

Tests read ``TRIOSHOP_TEST_REDIS`` (default: the local server, database 0). Where no Redis
answers (or ``redis-server`` is not installed, for a private one) they skip with the reason,
except when ``CI`` is set: then they fail, so CI cannot pass without them.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from tests.helpers import required
from trioshop.testing.redis import RedisServer

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def server_url() -> str:
    """The shared test server's URL (``TRIOSHOP_TEST_REDIS`` or the local default)."""
    return os.environ.get("TRIOSHOP_TEST_REDIS", DEFAULT_URL)


def fresh_stream() -> tuple[str, str]:
    """The shared server's URL and a stream name no other test uses; skipped (failed under
    CI) when nothing answers there."""
    url = server_url()
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2):
            pass
    except OSError as exc:
        required(f"no Redis to test against: {url}: {exc}",
                 ci_message=f"Redis is required in CI: {url}: {exc}")
    return url, f"trioshop.test.{secrets.token_hex(6)}"


@contextmanager
def private_redis(data_dir: str | None = None) -> Iterator[RedisServer]:
    """A :class:`RedisServer` of the test's own (to stop and pause; durable in *data_dir* if
    given), killed at the end; skipped (failed under CI) when ``redis-server`` is not
    installed."""
    server = RedisServer(data_dir)
    try:
        server.start()
    except FileNotFoundError as exc:
        required(f"cannot start a Redis: {exc}", ci_message=f"Redis is required in CI: {exc}")
    try:
        yield server
    finally:
        server.stop()
