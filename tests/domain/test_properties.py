"""Properties of the domain rules and of exact money, checked on generated carts and amounts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioshop.domain import CartLine, InsufficientStock, Order, add_line, total_cents
from trioshop.domain.errors import IdempotencyKeyReused
from trioshop.domain.money import parse_cents, to_json_number
from trioshop.domain.rules import quantities, replay, reserve_stock

# Few examples each: the whole file runs in a few seconds, and CI runs it on every push.
EXAMPLES = settings(max_examples=150, deadline=None)

SKUS = st.sampled_from(["A", "B", "C", "D", "E"])
PRICES = st.integers(min_value=0, max_value=10**9)
LINES = st.builds(
    CartLine, sku=SKUS, title=st.just("thing"), price_cents=PRICES,
    quantity=st.integers(min_value=1, max_value=1000),
)
LINE_LISTS = st.lists(LINES, max_size=12)
STOCK = st.dictionaries(SKUS, st.integers(min_value=0, max_value=3000))


def cart_of(lines: list[CartLine]) -> dict[str, CartLine]:
    """The cart *lines* make when added one after the other."""
    cart: dict[str, CartLine] = {}
    for line in lines:
        cart = add_line(cart, line)
    return cart


@EXAMPLES
@given(LINE_LISTS, LINE_LISTS)
def test_the_total_is_the_exact_sum_of_the_line_totals(first: list[CartLine],
                                                        second: list[CartLine]) -> None:
    """A total is the integer sum of price x quantity, and adds up over any split."""
    assert total_cents(first) == sum(line.price_cents * line.quantity for line in first)
    assert total_cents(first + second) == total_cents(first) + total_cents(second)


@EXAMPLES
@given(LINE_LISTS)
def test_adding_keeps_first_prices_places_and_every_unit(lines: list[CartLine]) -> None:
    """A cart built by adds holds each SKU once, in first-add order, at its first price, with
    every unit added."""
    cart = cart_of(lines)
    first = {line.sku: line for line in reversed(lines)}
    assert list(cart) == list(quantities(lines))
    assert {sku: line.quantity for sku, line in cart.items()} == quantities(lines)
    assert {sku: line.price_cents for sku, line in cart.items()} == {
        sku: line.price_cents for sku, line in first.items()
    }


@EXAMPLES
@given(LINE_LISTS, LINES)
def test_adding_a_new_sku_then_removing_it_restores_the_cart(lines: list[CartLine],
                                                              added: CartLine) -> None:
    """Adding a SKU the cart lacks, then removing its line, gives back the cart as it was."""
    cart = {sku: line for sku, line in cart_of(lines).items() if sku != added.sku}
    before = dict(cart)
    merged = add_line(cart, added)
    assert cart == before  # the input is never changed
    assert merged[added.sku] == added
    del merged[added.sku]
    assert list(merged.items()) == list(before.items())


@EXAMPLES
@given(LINE_LISTS, STOCK)
def test_reserving_takes_every_line_or_none(lines: list[CartLine],
                                            available: dict[str, int]) -> None:
    """Stock is reserved for all lines (no level below zero) or refused for the first SKU
    short of it, with its figures; the stock given is never changed."""
    wanted = quantities(lines)
    before = dict(available)
    short = [sku for sku, count in wanted.items() if count > available.get(sku, 0)]
    if short:
        with pytest.raises(InsufficientStock) as refused:
            reserve_stock(lines, available)
        assert (refused.value.sku, refused.value.requested, refused.value.available) == (
            short[0], wanted[short[0]], available.get(short[0], 0)
        )
    else:
        levels = reserve_stock(lines, available)
        assert levels == {sku: available[sku] - count for sku, count in wanted.items()}
        assert all(level >= 0 for level in levels.values())
    assert available == before


@EXAMPLES
@given(st.lists(LINE_LISTS, max_size=6), STOCK)
def test_reserving_one_after_another_never_oversells(carts: list[list[CartLine]],
                                                      initial: dict[str, int]) -> None:
    """Checkouts applied in turn never take a level below zero, and what they sold plus what
    is left is what there was."""
    stock = dict(initial)
    sold: dict[str, int] = {}
    for lines in carts:
        try:
            stock.update(reserve_stock(lines, stock))
        except InsufficientStock:
            continue
        for sku, count in quantities(lines).items():
            sold[sku] = sold.get(sku, 0) + count
    assert all(level >= 0 for level in stock.values())
    assert {sku: stock.get(sku, 0) + sold.get(sku, 0) for sku in stock} == initial
    assert set(sold) <= set(initial)


ORDERS = st.builds(
    Order, order_id=st.just("o1"), user_id=st.sampled_from(["u", "v"]),
    lines=st.just(()), total_cents=st.just(0), timestamp=st.just(1),
)


@EXAMPLES
@given(st.none() | ORDERS, st.sampled_from(["u", "v"]))
def test_a_replay_answers_the_same_order_every_time(earlier: Order | None, user: str) -> None:
    """A key's earlier order is answered to its own user, again and again; another user's
    key is refused every time; a new key is no replay."""
    if earlier is not None and earlier.user_id != user:
        for _ in range(2):
            with pytest.raises(IdempotencyKeyReused):
                replay(earlier, user)
    else:
        assert replay(earlier, user) is earlier
        assert replay(replay(earlier, user), user) is earlier


@EXAMPLES
@given(st.integers(min_value=0, max_value=10**15 - 1))
def test_cents_survive_the_json_number_and_back(cents: int) -> None:
    """Any amount below 10**13 units goes out as a JSON number and parses back exactly."""
    number = to_json_number(cents)
    assert parse_cents(number) == cents
    assert parse_cents(str(number)) == cents
    assert isinstance(number, int) == (cents % 100 == 0)


@EXAMPLES
@given(st.integers(min_value=0, max_value=10**20), st.integers(min_value=0, max_value=6))
def test_decimal_text_parses_exactly_or_is_refused(units: int, places: int) -> None:
    """A decimal amount parses to exact cents when it has at most two decimals, and is
    refused (not rounded) when it has more."""
    amount = Decimal(units).scaleb(-places)
    if places <= 2 or units % 10 ** (places - 2) == 0:
        assert parse_cents(str(amount)) == units * 100 // 10**places
    else:
        with pytest.raises(ValueError, match="two decimals"):
            parse_cents(str(amount))
