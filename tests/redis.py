"""Redis for tests: the shared server with a fresh stream per use, or a private server.

Tests read ``TRIOSHOP_TEST_REDIS`` (default: the local server, database 0). Where no Redis
answers (or ``redis-server`` is not installed, for a private one) they skip with the reason,
except when ``CI`` is set: then they fail, so CI cannot pass without them.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

from tests.helpers import required
from trioshop.testing.redis import DEFAULT_URL, RedisServer


def server_url() -> str:
    """The shared test server's URL (``TRIOSHOP_TEST_REDIS`` or the local default)."""
    return os.environ.get("TRIOSHOP_TEST_REDIS", DEFAULT_URL)


def _command(*words: str) -> bytes:
    """One Redis command in the protocol's array form."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _run(url: str, *commands: tuple[str, ...]) -> None:
    """Send *commands* to the Redis at *url* (its database selected) and read the replies;
    ``OSError`` when it does not answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2) as conn:
        conn.settimeout(2)
        database = parts.path.strip("/") or "0"
        with conn.makefile("rb") as replies:
            for command in [("SELECT", database), *commands]:
                conn.sendall(_command(*command))
                reply = replies.readline()
                if not reply or reply.startswith(b"-"):
                    raise OSError(f"{' '.join(command)}: {reply.decode().strip() or 'no reply'}")


@contextmanager
def fresh_stream() -> Iterator[tuple[str, str]]:
    """The shared server's URL and a stream name no other test uses, deleted at the end;
    skipped (failed under CI) when nothing answers there."""
    url = server_url()
    stream = f"trioshop.test.{secrets.token_hex(6)}"
    try:
        _run(url, ("PING",))
    except OSError as exc:
        required(f"no Redis to test against: {url}: {exc}",
                 ci_message=f"Redis is required in CI: {url}: {exc}")
    try:
        yield url, stream
    finally:
        _run(url, ("DEL", stream))


@contextmanager
def private_redis(
    data_dir: str | None = None, options: Sequence[str] = ()
) -> Iterator[RedisServer]:
    """A :class:`RedisServer` of the test's own (to stop and pause; durable in *data_dir* if
    given; *options* for ``redis-server``), killed at the end; skipped (failed under CI) when
    ``redis-server`` is not installed."""
    server = RedisServer(data_dir, options)
    try:
        server.start()
    except FileNotFoundError as exc:
        required(f"cannot start a Redis: {exc}", ci_message=f"Redis is required in CI: {exc}")
    try:
        yield server
    finally:
        server.stop()
