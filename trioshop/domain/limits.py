"""The figures the shop's contract promises, written once: validation, the API document and
the command line all read them from here."""

from __future__ import annotations

import re

# A user id: letters, digits and ``_ . @ -``, after URL decoding.
USER_ID_CHARACTERS = r"A-Za-z0-9_.@\-"
USER_ID_MAX_LENGTH = 64
USER_ID_PATTERN = rf"[{USER_ID_CHARACTERS}]{{1,{USER_ID_MAX_LENGTH}}}"
USER_ID = re.compile(USER_ID_PATTERN)

# How many of one SKU a single add may ask for.
MAX_QUANTITY = 1000

# An Idempotency-Key header: 1 to this many printable characters.
IDEMPOTENCY_KEY_MAX_LENGTH = 255

# Order ids are 32 hex digits; a longer path segment cannot be one.
ORDER_ID_MAX_LENGTH = 64


def is_user_id(value: str) -> bool:
    """Whether *value* is a valid user id."""
    return USER_ID.fullmatch(value) is not None


def is_idempotency_key(value: str) -> bool:
    """Whether *value* is a usable Idempotency-Key."""
    return 1 <= len(value) <= IDEMPOTENCY_KEY_MAX_LENGTH and value.isprintable()

# Catalog bounds (registry validation): every cart and order total stays far inside the
# 64-bit integers of the databases (1,000,000.00 x 1,000,000,000 < 2**63 / 92 lines).
MAX_PRICE_CENTS = 100_000_000  # 1,000,000.00
MAX_STOCK = 1_000_000_000
# A SKU appears in URL paths (DELETE .../items/{sku}): printable, no '/', bounded.
MAX_SKU_LENGTH = 64
