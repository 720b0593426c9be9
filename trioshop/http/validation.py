"""Checking what clients send: user ids, JSON bodies, SKUs and quantities."""

from __future__ import annotations

import json
from typing import Any

from trioshop.domain.limits import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    MAX_QUANTITY,
    USER_ID_MAX_LENGTH,
    is_idempotency_key,
    is_user_id,
)
from trioshop.http.errors import ApiError


def check_user_id(user_id: str) -> str:
    """Return *user_id* if it is a valid user id (see ``domain.limits``); else a 400."""
    if not is_user_id(user_id):
        raise ApiError(
            400, f"Invalid user_id: use 1-{USER_ID_MAX_LENGTH} characters of letters, digits, "
            "'_', '.', '@', '-'",
        )
    return user_id


JSON_TYPE = "application/json"


def parse_json_object(body: str | bytes, mimetype: str) -> dict[str, Any]:
    """The body, sent as *mimetype*, as a JSON object: a 415 unless it was sent as JSON (a
    form, which ``curl -d`` sends, is no JSON body), a 400 saying what is wrong otherwise."""
    if mimetype != JSON_TYPE:
        sent = f"it was {mimetype!r}" if mimetype else "none was sent"
        raise ApiError(
            415, f"Send the body as JSON with the header 'Content-Type: {JSON_TYPE}' ({sent})"
        )
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
    """The ``Idempotency-Key`` header if absent or usable (see ``domain.limits``); else a 400."""
    if value is None or is_idempotency_key(value):
        return value
    raise ApiError(
        400, f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX_LENGTH} printable characters"
    )
