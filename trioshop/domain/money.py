"""Exact money: amounts are integer cents inside, JSON numbers with at most two decimals outside."""

from __future__ import annotations

from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, InvalidOperation

CENTS_PER_UNIT = 100
# The ISO 4217 code of every amount (a registry's prices are plain numbers): the pages show it.
CURRENCY = "USD"
# Amounts with more integer digits than this are refused before any arithmetic.
_MAX_DIGITS = 30


def parse_cents(value: object) -> int:
    """Convert a price as written in a registry file (``1499.99``, ``"5"``) to integer cents.

    The value goes through its decimal text, never through float arithmetic, so ``149.99``
    becomes exactly ``14999``. Raises :class:`ValueError` for booleans, non-numbers,
    negative amounts and amounts with more than two decimals.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"expected a number, got {value!r} ({type(value).__name__})")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"expected a number, got {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"expected a finite number, got {value!r}")
    if amount < 0:
        raise ValueError(f"expected a non-negative amount, got {value!r}")
    if amount.adjusted() >= _MAX_DIGITS:
        raise ValueError(f"expected an amount below 10**{_MAX_DIGITS}, got {value!r}")
    # Exact: the context holds every digit, so nothing is rounded away before the check.
    exact = Context(prec=len(amount.as_tuple().digits) + _MAX_DIGITS, Emin=MIN_EMIN, Emax=MAX_EMAX)
    cents = amount.scaleb(2, context=exact)
    if cents != cents.to_integral_value(context=exact):
        raise ValueError(f"expected at most two decimals, got {value!r}")
    return int(cents)


def to_json_number(cents: int) -> int | float:
    """Render integer cents as the JSON number clients see: ``179997`` -> ``1799.97``.

    Dividing an exact integer by 100 once yields the float whose shortest repr is the
    two-decimal amount, so nothing is lost on the wire.
    """
    if cents % CENTS_PER_UNIT == 0:
        return cents // CENTS_PER_UNIT
    return cents / CENTS_PER_UNIT
