"""The shop's values: cart lines, cart views and orders, with their JSON shapes, and refusals."""

from __future__ import annotations

from typing import Any

import attrs

from trioshop.money import to_json_number
from trioshop.runtime import Refusal


@attrs.frozen
class CartLine:
    """One SKU in a cart, at the price it had when first added."""

    sku: str
    title: str
    price_cents: int
    quantity: int

    def to_json(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "title": self.title,
            "price": to_json_number(self.price_cents),
            "quantity": self.quantity,
        }

    def to_record(self) -> list[Any]:
        """The compact form stored in the database."""
        return [self.sku, self.title, self.price_cents, self.quantity]

    @classmethod
    def from_record(cls, record: list[Any]) -> CartLine:
        sku, title, price_cents, quantity = record
        return cls(sku, title, price_cents, quantity)


def lines_json(lines: tuple[CartLine, ...]) -> list[dict[str, Any]]:
    return [line.to_json() for line in lines]


def total_cents(lines: tuple[CartLine, ...]) -> int:
    return sum(line.price_cents * line.quantity for line in lines)


@attrs.frozen
class CartView:
    """A snapshot of a cart: lines in the order first added, and the exact total."""

    user_id: str
    lines: tuple[CartLine, ...]
    total_cents: int

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "items": lines_json(self.lines),
            "total": to_json_number(self.total_cents),
        }


@attrs.frozen
class Order:
    """A checked-out cart: what was bought, for how much, and when (unix seconds)."""

    order_id: str
    user_id: str
    lines: tuple[CartLine, ...]
    total_cents: int
    timestamp: int
    idempotency_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "user_id": self.user_id,
            "items": lines_json(self.lines),
            "total": to_json_number(self.total_cents),
            "timestamp": self.timestamp,
        }


@attrs.define
class OrderCounters:
    """Orders placed and their value since the server started (for metrics)."""

    checkouts: int = 0
    revenue_cents: int = 0


@attrs.frozen
class ServiceStatus:
    """What one service did with one order, and when (unix seconds)."""

    status: str
    at: float


class CartEmpty(Refusal):
    """Checkout of a cart that has no lines."""

    def __init__(self) -> None:
        super().__init__("Cart is empty")


class ItemNotInCart(Refusal, LookupError):
    """Removal of a SKU the cart does not hold."""

    def __init__(self, sku: str) -> None:
        super().__init__(f"Item not in cart: {sku}")


class InsufficientStock(Refusal):
    """More of a SKU was asked for than is in stock; nothing was changed."""

    def __init__(self, sku: str, requested: int, available: int) -> None:
        super().__init__(
            f"Insufficient stock for {sku}: requested {requested}, available {available}"
        )
        self.sku = sku
        self.requested = requested
        self.available = available


class IdempotencyKeyReused(Refusal):
    """An Idempotency-Key already used by another user's checkout."""

    def __init__(self) -> None:
        super().__init__("Idempotency-Key was already used for another user's checkout")
