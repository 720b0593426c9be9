"""The shop's refusals: answers to a request that change nothing, each saying why."""

from __future__ import annotations


class DomainError(Exception):
    """A request the shop refuses by its rules; nothing was changed, the message says why."""


class NoActiveCart(DomainError, LookupError):
    """The user has no cart, live or stored (never started, checked out, or cleared)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"No active cart for user {user_id!r}")
        self.user_id = user_id


class CartEmpty(DomainError):
    """Checkout of a cart that has no lines."""

    def __init__(self) -> None:
        super().__init__("Cart is empty")


class ItemNotInCart(DomainError, LookupError):
    """Removal of a SKU the cart does not hold."""

    def __init__(self, sku: str) -> None:
        super().__init__(f"Item not in cart: {sku}")
        self.sku = sku


class InsufficientStock(DomainError):
    """More of a SKU was asked for than is in stock; nothing was changed."""

    def __init__(self, sku: str, requested: int, available: int) -> None:
        super().__init__(
            f"Insufficient stock for {sku}: requested {requested}, available {available}"
        )
        self.sku = sku
        self.requested = requested
        self.available = available


class IdempotencyKeyReused(DomainError):
    """An Idempotency-Key already used by another user's checkout."""

    def __init__(self) -> None:
        super().__init__("Idempotency-Key was already used for another user's checkout")
