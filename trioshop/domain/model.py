"""The shop's values: cart lines, cart views, orders and what services did with them."""

from __future__ import annotations

import attrs


@attrs.frozen
class CartLine:
    """One SKU in a cart, at the price (integer cents) it had when first added."""

    sku: str
    title: str
    price_cents: int
    quantity: int


@attrs.frozen
class CartView:
    """A snapshot of a cart: lines in the order first added, and the exact total."""

    user_id: str
    lines: tuple[CartLine, ...]
    total_cents: int


@attrs.frozen
class Order:
    """A checked-out cart: what was bought, for how much, and when (unix seconds)."""

    order_id: str
    user_id: str
    lines: tuple[CartLine, ...]
    total_cents: int
    timestamp: int
    idempotency_key: str | None = None


@attrs.frozen
class Placement:
    """What a checkout did: placed *order* now, or (``replayed``) found it placed before.

    A replay is a repeat of an earlier checkout with the same idempotency key: nothing was
    changed, and the cart that asked stays as it is.
    """

    order: Order
    replayed: bool = False


@attrs.frozen
class ServiceOutcome:
    """What one service did with one order (``dispatched``, ``sent``...), and when (unix s)."""

    status: str
    at: float
