"""Checking what clients send: user ids, JSON bodies, SKUs and quantities."""

from __future__ import annotations

import json
import re
from typing import Any

from trioshop.http.errors import ApiError

USER_ID = re.compile(r"[A-Za-z0-9_.@\-]{1,64}")
MAX_QUANTITY = 1000


def check_user_id(user_id: str) -> str:
    """Return *user_id* if it is 1-64 letters, digits, ``_ . @ -``; else a 400."""
    if not USER_ID.fullmatch(user_id):
        raise ApiError(
            400, "Invalid user_id: use 1-64 characters of letters, digits, '_', '.', '@', '-'"
        )
    return user_id


def parse_json_object(body: str | bytes) -> dict[str, Any]:
    """The body as a JSON object; a 400 saying what is wrong otherwise."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "Invalid JSON body") from None
    if not isinstance(value, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return value


def check_add_item(body: dict[str, Any]) -> tuple[str, int]:
    """The ``sku`` and ``quantity`` (default 1) of an add-item body, or a 400."""
    sku = body.get("sku")
    if sku is None:
        raise ApiError(400, "Missing required field: sku")
    if not isinstance(sku, str) or not sku.strip():
        raise ApiError(400, "Field 'sku' must be a non-empty string")
    quantity = body.get("quantity", 1)
    # bool is an int subclass in Python, but true is not a quantity.
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise ApiError(400, f"Field 'quantity' must be an integer from 1 to {MAX_QUANTITY}")
    if not 1 <= quantity <= MAX_QUANTITY:
        raise ApiError(400, f"Field 'quantity' must be an integer from 1 to {MAX_QUANTITY}")
    return sku, quantity


def check_idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header if absent or 1-255 printable characters; else a 400."""
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or not value.isprintable():
        raise ApiError(400, "Idempotency-Key must be 1-255 printable characters")
    return value
