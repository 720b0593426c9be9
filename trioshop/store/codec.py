"""How cart and order lines are written in a database column: compact JSON arrays."""

from __future__ import annotations

import json

from trioshop.domain import CartLine


def encode_lines(lines: tuple[CartLine, ...]) -> str:
    """``[[sku, title, price_cents, quantity], ...]``, in cart order."""
    return json.dumps([[x.sku, x.title, x.price_cents, x.quantity] for x in lines])


def decode_lines(text: str) -> tuple[CartLine, ...]:
    """The lines :func:`encode_lines` wrote."""
    return tuple(CartLine(*record) for record in json.loads(text))
