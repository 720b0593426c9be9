"""Tests of the pure cart and checkout rules: merging lines, replays, stock reservation, totals."""

from __future__ import annotations

import pytest

from trioshop.domain import (
    CartLine,
    IdempotencyKeyReused,
    InsufficientStock,
    Order,
    add_line,
    check_stock,
    replay,
    reserve_stock,
    total_cents,
)


def line(sku: str, quantity: int = 1, price_cents: int = 1000, title: str = "") -> CartLine:
    """A cart line of *sku* with a default title and price."""
    return CartLine(sku, title or f"Title of {sku}", price_cents, quantity)


def order(user_id: str, key: str | None = "key-1") -> Order:
    """An earlier order of *user_id*, placed with *key*."""
    lines = (line("A", 2),)
    return Order("order-1", user_id, lines, total_cents(lines), 1_700_000_000, key)


# -- total_cents ------------------------------------------------------------------------


def test_total_of_no_lines_is_zero() -> None:
    """An empty cart totals zero cents."""
    assert total_cents([]) == 0


def test_total_is_exact_sum_of_price_times_quantity() -> None:
    """The total multiplies each price by its quantity and adds them, exactly in cents."""
    lines = [line("A", 3, 14999), line("B", 1, 149999), line("C", 7, 1)]
    assert total_cents(lines) == 3 * 14999 + 149999 + 7


def test_total_accepts_any_iterable() -> None:
    """The total reads a one-shot iterator (a generator) as well as a sequence."""
    assert total_cents(line("A", q, 100) for q in (1, 2, 3)) == 600


# -- add_line ---------------------------------------------------------------------------


def test_add_to_empty_cart_inserts_the_line() -> None:
    """Adding a SKU to an empty cart gives a cart holding exactly that line."""
    added = line("A", 2)
    assert add_line({}, added) == {"A": added}


def test_add_same_sku_merges_quantities() -> None:
    """Adding a SKU already in the cart raises that line's quantity by the added amount."""
    lines = {"A": line("A", 2)}
    merged = add_line(lines, line("A", 3))
    assert merged["A"].quantity == 5
    assert list(merged) == ["A"]


def test_merged_line_keeps_its_place() -> None:
    """A merged line stays where it was first added; new SKUs go to the end."""
    lines = {"A": line("A"), "B": line("B"), "C": line("C")}
    merged = add_line(lines, line("A", 4))
    assert list(merged) == ["A", "B", "C"]
    extended = add_line(merged, line("D"))
    assert list(extended) == ["A", "B", "C", "D"]


def test_merged_line_keeps_first_price_and_title() -> None:
    """A repeated add at a new price and title keeps the line's first price and title (a quote)."""
    lines = {"A": line("A", 1, price_cents=14999, title="Old title")}
    merged = add_line(lines, line("A", 2, price_cents=19999, title="New title"))
    assert merged["A"] == CartLine("A", "Old title", 14999, 3)


def test_stock_up_to_exactly_available_is_allowed() -> None:
    """A total equal to the stock is allowed; only more than the stock is refused."""
    check_stock("A", 5, 5)


def test_over_stock_refused_with_details() -> None:
    """Exceeding stock raises InsufficientStock naming the SKU, total asked and stock."""
    with pytest.raises(InsufficientStock) as caught:
        check_stock("A", 6, 5)
    assert (caught.value.sku, caught.value.requested, caught.value.available) == ("A", 6, 5)
    assert "requested 6, available 5" in str(caught.value)


def test_unstocked_sku_refused() -> None:
    """With no stock at all, even one item is refused."""
    with pytest.raises(InsufficientStock) as caught:
        check_stock("A", 1, 0)
    assert (caught.value.requested, caught.value.available) == (1, 0)


def test_successful_add_returns_a_new_mapping() -> None:
    """A successful add returns a new dict and leaves the input mapping as it was."""
    lines = {"A": line("A", 1)}
    merged = add_line(lines, line("B", 1))
    assert merged is not lines
    assert lines == {"A": line("A", 1)}


# -- replay -----------------------------------------------------------------------------


def test_replay_of_new_key_is_none() -> None:
    """A key that found no earlier order means a new checkout: None."""
    assert replay(None, "alice") is None


def test_replay_returns_earlier_order_of_same_user() -> None:
    """A key found with this user's earlier order answers that very order."""
    earlier = order("alice")
    assert replay(earlier, "alice") is earlier


def test_replay_of_another_users_key_refused() -> None:
    """A key found with another user's order raises IdempotencyKeyReused."""
    with pytest.raises(IdempotencyKeyReused):
        replay(order("bob"), "alice")


# -- reserve_stock ----------------------------------------------------------------------


def test_reserve_returns_levels_after_taking_every_line() -> None:
    """Reserving gives each line's SKU its stock less the quantity taken."""
    levels = reserve_stock([line("A", 2), line("B", 5)], {"A": 10, "B": 5, "C": 7})
    assert levels == {"A": 8, "B": 0}


def test_reserve_of_no_lines_changes_nothing() -> None:
    """Reserving nothing yields no new levels."""
    assert reserve_stock([], {"A": 1}) == {}


def test_reserve_is_all_or_nothing() -> None:
    """One short line refuses the whole reservation, naming that line; the stock is untouched."""
    available = {"A": 10, "B": 1}
    with pytest.raises(InsufficientStock) as caught:
        reserve_stock([line("A", 2), line("B", 2)], available)
    assert (caught.value.sku, caught.value.requested, caught.value.available) == ("B", 2, 1)
    assert available == {"A": 10, "B": 1}


def test_reserve_of_unknown_sku_has_no_stock() -> None:
    """A SKU missing from the stock mapping counts as zero available."""
    with pytest.raises(InsufficientStock) as caught:
        reserve_stock([line("GHOST", 1)], {"A": 10})
    assert (caught.value.sku, caught.value.available) == ("GHOST", 0)


def test_reserve_counts_lines_of_same_sku_together() -> None:
    """Two lines of one SKU draw from the same stock: together they may not exceed it."""
    assert reserve_stock([line("A", 2), line("A", 3)], {"A": 5}) == {"A": 0}
    with pytest.raises(InsufficientStock) as caught:
        reserve_stock([line("A", 3), line("A", 3)], {"A": 5})
    # The refusal reports the SKU's totals: 6 asked for, 5 in stock.
    assert (caught.value.sku, caught.value.requested, caught.value.available) == ("A", 6, 5)


def test_reserve_does_not_mutate_available() -> None:
    """A successful reservation leaves the given stock mapping as it was."""
    available = {"A": 10, "B": 4}
    reserve_stock([line("A", 3), line("B", 4)], available)
    assert available == {"A": 10, "B": 4}
