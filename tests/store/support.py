"""Stock, cart lines and order helpers shared by the store tests."""

from __future__ import annotations

from trioshop.domain import CartLine, Order, Placement
from trioshop.store import Store

INITIAL_STOCK = {"A": 5, "B": 2}
LINE_A = CartLine("A", "Thing A", 250, 2)
LINE_B = CartLine("B", "Thing B", 1000, 1)
ONE_A = CartLine("A", "Thing A", 250, 1)


def order(order_id: str, user: str, *lines: CartLine, key: str | None = None) -> Order:
    """An order of *lines* by *user* (all orders share one timestamp: ties are the norm)."""
    return Order(order_id, user, lines, sum(x.price_cents * x.quantity for x in lines), 1, key)


async def place(
    store: Store, order_id: str, user: str, *lines: CartLine, key: str | None = None
) -> Placement:
    """Save *lines* as *user*'s cart, then check them out at the version just saved."""
    version = await store.save_cart(user, lines, version=await store.cart_version(user))
    return await store.checkout(order(order_id, user, *lines, key=key), version=version)
