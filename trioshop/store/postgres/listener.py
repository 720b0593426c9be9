"""The outbox listener: a connection of its own LISTENing for every node's checkouts, which
wakes this node's outbox loops."""

from __future__ import annotations

import logging

import attrs
import psycopg
import trio

from trioshop.logs import log_event
from trioshop.store.base import FailureKind, StoreError
from trioshop.store.postgres.errors import reason, where
from trioshop.store.postgres.pool import CONNECT_TIMEOUT, KEEPALIVES, session_name
from trioshop.store.postgres.sql import Connection

logger = logging.getLogger("trioshop.store")

# Every checkout that queues an order notifies this channel; each node's listener wakes its
# services' outbox loops (which also poll, so a lost notification costs latency only).
OUTBOX_CHANNEL = "trioshop_outbox"
# The outbox listener's reconnection delays: doubling from the first to the last.
LISTEN_BACKOFF = (0.1, 10.0)


@attrs.define
class OutboxListener:
    """Notifications of the outbox channel of the database at ``url``, for :meth:`wait`.

    :meth:`connect` makes the first connection (StoreError if it cannot), then
    :meth:`listen` runs until cancelled, reconnecting when the link breaks.
    """

    url: str
    # The server process of the listen connection (0: none), for operators and tests.
    pid: int = attrs.field(default=0, init=False)
    _news: trio.Event = attrs.field(factory=trio.Event, init=False)


    def _listening_connection(self) -> Connection:
        conn = psycopg.connect(
            self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, **KEEPALIVES,
            **session_name(self.url),
        )
        try:
            conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def connect(self) -> Connection:
        """A new connection LISTENing on the outbox channel (its own, not the pool's)."""
        try:
            # Its own thread, outside the pool's limiter: a reconnection waiting for an
            # unreachable server holds none of the operations' places.
            conn = await trio.to_thread.run_sync(self._listening_connection)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot listen on PostgreSQL at {where(self.url)}: {reason(exc)}",
                kind=FailureKind.UNAVAILABLE,
            ) from exc
        self.pid = conn.info.backend_pid
        return conn

    async def listen(self, conn: Connection) -> None:
        """Wake :meth:`wait` at every notification; reconnect when the link breaks.

        Waits for the socket on the Trio thread, then drains what arrived without blocking.
        After a reconnection it wakes the waiters once: what was sent meanwhile is lost.
        """
        delay = LISTEN_BACKOFF[0]
        while True:
            try:
                while True:
                    await trio.lowlevel.wait_readable(conn.fileno())
                    if sum(1 for _ in conn.notifies(timeout=0)):
                        self._wake()
            except psycopg.Error as exc:
                log_event(
                    logger, "outbox listener lost its connection", logging.WARNING,
                    error=reason(exc),
                )
            finally:
                conn.close()
                self.pid = 0
            while True:
                await trio.sleep(delay)
                delay = min(delay * 2, LISTEN_BACKOFF[1])
                try:
                    conn = await self.connect()
                except StoreError as exc:
                    log_event(logger, "outbox listener cannot reconnect", logging.WARNING,
                              error=str(exc), retry_in=delay)
                    continue
                log_event(logger, "outbox listener reconnected")
                delay = LISTEN_BACKOFF[0]
                self._wake()
                break

    def _wake(self) -> None:
        self._news.set()
        self._news = trio.Event()


    async def wait(self) -> None:
        """Return at the next notification of a checkout that queued orders, on any node."""
        await self._news.wait()
