"""The SQLite store closes its connections only after every read thread using them returned."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio
import trio.testing

from tests.store.support import INITIAL_STOCK
from trioshop.store import StoreClosed
from trioshop.store.sqlite import DATABASE_FILE, SqliteStore

T = TypeVar("T")
# How long a held read waits for the test to release it (a bound, never reached when green).
HOLD_TIMEOUT = 30.0


class HeldReads(SqliteStore):
    """A SQLite store whose reads wait in their worker thread until the test releases them."""

    entered = threading.Event()
    release = threading.Event()

    def _run_read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        self.entered.set()
        self.release.wait(HOLD_TIMEOUT)
        return super()._run_read(query)


async def test_cancelled_store_waits_for_a_read_in_its_thread(tmp_path: Path) -> None:
    """Cancelled while a read runs in a thread, the store closes after it: the read succeeds."""
    store = HeldReads(tmp_path / DATABASE_FILE, trio.CapacityLimiter(4))
    HeldReads.entered.clear()
    HeldReads.release.clear()
    answers: list[object] = []

    async def read() -> None:
        answers.append(await store.order("no-such-order"))

    async with trio.open_nursery() as nursery:
        await nursery.start(store.run, INITIAL_STOCK)
        nursery.start_soon(read)
        await trio.to_thread.run_sync(HeldReads.entered.wait, HOLD_TIMEOUT)
        nursery.cancel_scope.cancel()  # as a failed start cancels the whole shop at once
        with trio.CancelScope(shield=True):
            await trio.testing.wait_all_tasks_blocked()  # the store's shutdown has run as far
        HeldReads.release.set()  # as it will before the read returns
    assert answers == [None]
    try:
        await store.order("no-such-order")
    except StoreClosed:
        pass
    else:
        raise AssertionError("a read after the store closed was answered")
