"""Stock, cart lines and order helpers shared by the store tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path

import trio

from tests.postgres import fresh_schema
from trioshop.domain import CartLine, Order, Placement
from trioshop.store import CartWrite, Store, open_store

INITIAL_STOCK = {"A": 5, "B": 2}
LINE_A = CartLine("A", "Thing A", 250, 2)
LINE_B = CartLine("B", "Thing B", 1000, 1)
ONE_A = CartLine("A", "Thing A", 250, 1)

# The backends every store test runs on; PostgreSQL skips (fails in CI) when none answers.
BACKENDS = ["memory", "sqlite", "postgres"]

Opener = Callable[[], AbstractAsyncContextManager[Store]]


@contextmanager
def backend_opener(
    backend: str, data_dir: Path, stock: Mapping[str, int] = INITIAL_STOCK
) -> Iterator[Opener]:
    """How to open a *backend* store seeded with *stock*: SQLite in *data_dir*, PostgreSQL
    in a fresh schema dropped at the end (sync, for fixtures: its skips keep their reasons)."""
    if backend == "postgres":
        with fresh_schema() as url:
            yield lambda: open_store(None, stock, trio.CapacityLimiter(2), database_url=url)
    else:
        folder = data_dir if backend == "sqlite" else None
        yield lambda: open_store(folder, stock, trio.CapacityLimiter(2))


def order(order_id: str, user: str, *lines: CartLine, key: str | None = None) -> Order:
    """An order of *lines* by *user* (all orders share one timestamp: ties are the norm)."""
    return Order(order_id, user, lines, sum(x.price_cents * x.quantity for x in lines), 1, key)


async def place(
    store: Store, order_id: str, user: str, *lines: CartLine, key: str | None = None
) -> Placement:
    """Save *lines* as *user*'s cart, then check them out at the version just saved."""
    version = await store.save_cart(
        CartWrite(user_id=user, lines=lines, version=await store.cart_version(user))
    )
    return await store.checkout(order(order_id, user, *lines, key=key), version=version)
