"""Add keys past their retention are pruned while the store is open, not only when it opens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio
import trio.testing

from tests.store.support import INITIAL_STOCK, LINE_A
from trioshop.store import CartWrite, open_store
from trioshop.store.base import ADD_KEY_PRUNE_SECONDS, ADD_KEY_RETENTION_SECONDS
from trioshop.store.sqlite import DATABASE_FILE


def stored_keys(database: Path) -> int:
    with sqlite3.connect(database) as conn:
        return int(conn.execute("SELECT count(*) FROM add_keys").fetchone()[0])


async def test_an_open_store_prunes_expired_add_keys_every_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A key that expires while the store is open is deleted within one prune interval."""
    database = tmp_path / DATABASE_FILE
    async with open_store(tmp_path, INITIAL_STOCK, trio.CapacityLimiter(2)) as store:
        await store.save_cart(
            CartWrite(user_id="u", lines=(LINE_A,), version=0, add_key=("old", LINE_A))
        )
        await store.save_cart(
            CartWrite(user_id="v", lines=(LINE_A,), version=0, add_key=("new", LINE_A))
        )
        with sqlite3.connect(database) as conn:  # "old" was made a retention ago
            conn.execute(
                "UPDATE add_keys SET created_at = created_at - ? WHERE key = 'old'",
                (ADD_KEY_RETENTION_SECONDS + 1,),
            )
        assert stored_keys(database) == 2
        await trio.sleep(ADD_KEY_PRUNE_SECONDS + 1)
        # Writes commit in order: once this one has, so has the prune submitted before it.
        await store.save_cart(CartWrite(user_id="w", lines=(LINE_A,), version=0))
        assert stored_keys(database) == 1
        assert await store.added_with_key("v", "new") == LINE_A
