"""The rules of a cart and of checkout, as pure functions every store and the cart share.

Stores call them inside their own transaction, on the figures that transaction read, so the
rules are written once and each backend only supplies atomicity.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from trioshop.domain.errors import IdempotencyKeyReused, InsufficientStock
from trioshop.domain.model import CartLine, Order


def total_cents(lines: Iterable[CartLine]) -> int:
    """The exact total of *lines*, in cents."""
    return sum(line.price_cents * line.quantity for line in lines)


def check_stock(sku: str, requested: int, available: int) -> None:
    """:class:`InsufficientStock` if a cart would hold *requested* of *sku* and only
    *available* are in stock."""
    if requested > available:
        raise InsufficientStock(sku, requested, available)


def add_line(lines: Mapping[str, CartLine], added: CartLine) -> dict[str, CartLine]:
    """*lines* with *added* merged in (the stock is checked with the write that stores them:
    ``CartWrite.stock_check``).

    Adding a SKU already there raises that line's quantity; the line keeps its place and the
    price it was first added at (a cart line is a quote).
    """
    line = lines.get(added.sku)
    quantity = added.quantity + (line.quantity if line else 0)
    merged = dict(lines)
    merged[added.sku] = added if line is None else attrs.evolve(line, quantity=quantity)
    return merged


def replay(earlier: Order | None, user_id: str) -> Order | None:
    """The order to answer again for a checkout by *user_id* whose key found *earlier*.

    ``None`` when the key is new. Raises :class:`IdempotencyKeyReused` when the key belongs
    to another user's order.
    """
    if earlier is not None and earlier.user_id != user_id:
        raise IdempotencyKeyReused()
    return earlier


def reserve_stock(lines: Iterable[CartLine], available: Mapping[str, int]) -> dict[str, int]:
    """The stock levels once every line is taken from *available*: all lines or none.

    Raises :class:`InsufficientStock` for the first SKU whose lines, together, ask for more
    than there is (an unknown SKU has none).
    """
    levels: dict[str, int] = {}
    for sku, quantity in quantities(lines).items():
        have = available.get(sku, 0)
        check_stock(sku, quantity, have)
        levels[sku] = have - quantity
    return levels


def quantities(lines: Iterable[CartLine]) -> dict[str, int]:
    """How many of each SKU *lines* hold together, in the order SKUs first appear."""
    wanted: dict[str, int] = {}
    for line in lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    return wanted
