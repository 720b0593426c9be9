"""The shop's domain: carts, orders and refusals as values, and the pure rules of checkout.

It knows nothing of actors, storage or HTTP; every store and the cart actor share its rules.
"""

from trioshop.domain.errors import (
    CartEmpty,
    DomainError,
    IdempotencyKeyReused,
    InsufficientStock,
    ItemNotInCart,
    NoActiveCart,
)
from trioshop.domain.model import CartLine, CartView, Order, Placement, ServiceOutcome
from trioshop.domain.rules import (
    add_line,
    check_stock,
    quantities,
    replay,
    reserve_stock,
    total_cents,
)

__all__ = [
    "CartEmpty",
    "CartLine",
    "CartView",
    "DomainError",
    "IdempotencyKeyReused",
    "InsufficientStock",
    "ItemNotInCart",
    "NoActiveCart",
    "Order",
    "Placement",
    "ServiceOutcome",
    "add_line",
    "check_stock",
    "quantities",
    "replay",
    "reserve_stock",
    "total_cents",
]
