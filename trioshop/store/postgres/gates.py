"""Who may hold a shared database's pooled connections: reads keep a reserve, and the writes
waiting for one row (a cart, a SKU's stock) may hold only a few, so no stuck row pins a pool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import attrs
import trio

from trioshop.store.base import StoreError

# Connections of a pool kept for reads (views, products' stock, orders, readiness pings):
# writes never hold them, so writes waiting for locked rows cannot starve what needs no lock.
# A pool keeps at least one connection for writes (a pool of 2 keeps 1 for reads, of 1 none).
READ_RESERVE = 2
# How many writes needing one row (``cart:<user>``, ``stock:<sku>``) may hold a connection
# at once; the others wait for a place without holding one.
ROW_PLACES = 2
# How long a write waits for a place at a row before it is a StoreError: a row whose places
# stay taken this long is held by a transaction that does not end.
ROW_WAIT = 1.0


@attrs.define
class Gates:
    """The places on a pool of ``size`` connections, ``READ_RESERVE`` of them for reads only.

    ``connections`` has a token per pooled connection: whoever holds one has a connection
    (and a worker thread). A write first takes a place at each row it may wait for (in key
    order: two writes never wait for each other's places), then a ``writers`` token, then a
    connection: writes hold at most ``writers`` connections, reads always find the reserve.
    """

    size: int
    row_places: int = ROW_PLACES
    row_wait: float = ROW_WAIT
    connections: trio.CapacityLimiter = attrs.field(init=False)
    writers: trio.CapacityLimiter = attrs.field(init=False)
    _rows: dict[str, trio.CapacityLimiter] = attrs.field(factory=dict, init=False)

    @connections.default
    def _all_connections(self) -> trio.CapacityLimiter:
        return trio.CapacityLimiter(self.size)

    @writers.default
    def _write_connections(self) -> trio.CapacityLimiter:
        return trio.CapacityLimiter(max(1, self.size - READ_RESERVE))

    def reading(self) -> AbstractAsyncContextManager[None]:
        """Hold a connection's token (a read takes no lock: it never waits for a row)."""
        return self._reading()

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        async with self.connections:
            yield

    def writing(self, rows: Iterable[str] = ()) -> AbstractAsyncContextManager[None]:
        """Hold a place at each of *rows*, a writer's token and a connection's token.

        Raises :class:`StoreError` when a row's places stay taken for ``row_wait`` seconds.
        """
        return self._writing(sorted(set(rows)))

    @asynccontextmanager
    async def _writing(self, rows: list[str]) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for row in rows:
                await stack.enter_async_context(self._place(row))
            await stack.enter_async_context(self.writers)
            await stack.enter_async_context(self.connections)
            yield

    @asynccontextmanager
    async def _place(self, row: str) -> AsyncIterator[None]:
        limiter = self._rows.get(row)
        if limiter is None:
            limiter = self._rows[row] = trio.CapacityLimiter(self.row_places)
        try:
            with trio.move_on_after(self.row_wait) as waited:
                await limiter.acquire()
            if waited.cancelled_caught:  # not acquired
                raise StoreError(
                    f"{self.row_places} changes of {row} have waited for over "
                    f"{self.row_wait:g} s: another transaction holds it; retry later"
                )
            try:
                yield
            finally:
                limiter.release()
        finally:
            stats = limiter.statistics()
            if not stats.borrowed_tokens and not stats.tasks_waiting:
                self._rows.pop(row, None)

    def rows_waited_on(self) -> int:
        """Rows some write holds or waits for a place at now (for tests and statistics)."""
        return len(self._rows)


def cart_row(user_id: str) -> str:
    """The name of *user_id*'s cart row for :class:`Gates`."""
    return f"cart:{user_id}"
