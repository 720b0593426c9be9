"""The store contract on generated sequences of operations, against a model in dictionaries.

Each backend is opened once per test (the ``store`` fixture); each example works on SKUs,
users and idempotency keys of its own, so examples never see each other's rows (nor the
seeded ones). Hypothesis drives the examples from a worker thread and each one runs on the
test's Trio loop (``trio.from_thread.run``).
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.store.support import order
from trioshop.domain import CartLine, IdempotencyKeyReused, InsufficientStock, Order
from trioshop.domain.rules import quantities
from trioshop.store import CartConflict, CartWrite, Store, StoredCart

# Few examples, few steps: a PostgreSQL run stays within a few seconds.
EXAMPLES = settings(max_examples=40, deadline=None, database=None)

SKUS = ["A", "B", "C"]  # C is never seeded: a SKU only add_stock can bring
PRICES = {"A": 250, "B": 1000, "C": 99}
USERS = ["u", "v"]

# Versions written at: the stored one, or a stale or future one (a conflict).
VERSION_SKEW = st.sampled_from([0, 0, 0, 0, -1, 1])
# How many of each SKU a save puts in the cart (none: no line); mostly ones in stock.
CART_LINES = st.fixed_dictionaries({
    "A": st.integers(0, 3), "B": st.integers(0, 3), "C": st.sampled_from([0, 0, 0, 1]),
})
KEYS = st.sampled_from([None, None, "k1", "k2"])

SAVE = st.tuples(
    st.just("save"), st.sampled_from(USERS), CART_LINES, VERSION_SKEW, st.booleans()
)
CHECKOUT = st.tuples(st.just("checkout"), st.sampled_from(USERS), VERSION_SKEW, KEYS)
ADD_STOCK = st.tuples(st.just("add_stock"), st.sampled_from(SKUS), st.integers(0, 6))
OPERATIONS = st.lists(st.one_of(SAVE, CHECKOUT, SAVE, CHECKOUT, ADD_STOCK), min_size=3, max_size=12)
SEED = st.fixed_dictionaries({"A": st.integers(0, 10), "B": st.integers(0, 10)})

# Every outcome at least once, whatever the generated examples reach.
SEED_AB = {"A": 5, "B": 2}
SOLD_REUSED_CONFLICTED_REPLAYED_SHORT = [
    ("save", "u", {"A": 2, "B": 1, "C": 0}, 0, True),
    ("checkout", "u", 0, "k1"),
    ("save", "v", {"A": 1, "B": 0, "C": 0}, 0, False),
    ("checkout", "v", 0, "k1"),
    ("save", "u", {"A": 4, "B": 0, "C": 0}, 0, False),
    ("checkout", "u", 1, None),
    ("checkout", "u", 0, "k1"),
    ("checkout", "u", 0, None),
]
EMPTY_NEW_SKU_STALE_CHECKED = [
    ("save", "u", {"A": 0, "B": 0, "C": 0}, 0, False),
    ("add_stock", "C", 2),
    ("add_stock", "A", 9),
    ("save", "u", {"A": 0, "B": 0, "C": 1}, -1, False),
    ("save", "u", {"A": 0, "B": 0, "C": 3}, 0, True),
    ("save", "u", {"A": 0, "B": 0, "C": 2}, 0, True),
    ("checkout", "u", 0, None),
]

_examples = itertools.count()


@attrs.define
class Model:
    """What the store should hold for one example: carts, stock, sales and orders by key."""

    prefix: str
    initial: dict[str, int]
    stock: dict[str, int] = attrs.Factory(lambda self: dict(self.initial), takes_self=True)
    sold: dict[str, int] = attrs.field(factory=dict)
    carts: dict[str, StoredCart] = attrs.field(factory=dict)
    by_key: dict[str, Order] = attrs.field(factory=dict)
    placed: int = 0

    def name(self, short: str) -> str:
        """A SKU, user or key name of this example's own."""
        return f"{self.prefix}{short}"

    def cart(self, user: str) -> StoredCart:
        return self.carts.get(user, StoredCart((), 0))

    def lines(self, wanted: dict[str, int]) -> tuple[CartLine, ...]:
        return tuple(
            CartLine(self.name(sku), sku, PRICES[sku], count)
            for sku, count in wanted.items() if count
        )


async def save(store: Store, model: Model, user: str, wanted: dict[str, int], skew: int,
               checked: bool) -> None:
    """A conditional save (with a stock check of its first line when *checked*)."""
    current = model.cart(user)
    lines = model.lines(wanted)
    check = (lines[0].sku, lines[0].quantity) if checked and lines else None
    short = check is not None and check[1] > model.stock.get(check[0], 0)
    saving = store.save_cart(
        CartWrite(user_id=user, lines=lines, version=current.version + skew, stock_check=check)
    )
    if short or skew:
        # Which refusal wins when both apply is not part of the contract.
        refusal = (InsufficientStock, CartConflict) if short and skew else (
            InsufficientStock if short else CartConflict
        )
        with pytest.raises(refusal) as refused:
            await saving
        if isinstance(refused.value, CartConflict):
            assert refused.value.current == current
    elif not lines and not current.version:
        assert await saving == 0  # nothing stored, nothing to store
    else:
        assert await saving == current.version + 1
        model.carts[user] = StoredCart(lines, current.version + 1)


async def checkout(store: Store, model: Model, user: str, skew: int, key: str | None) -> None:
    """A checkout of the user's cart as the model holds it: the other user's if that one has
    no lines (an empty cart never reaches the store); nothing if neither has."""
    if not model.cart(user).lines:
        user = next((other for other in model.carts if model.carts[other].lines), user)
    current = model.cart(user)
    if not current.lines:
        return
    key = None if key is None else model.name(key)
    model.placed += 1
    placing = order(model.name(f"o{model.placed}"), user, *current.lines, key=key)
    version = current.version + skew
    earlier = model.by_key.get(key) if key is not None else None
    if earlier is not None and earlier.user_id != user:
        with pytest.raises(IdempotencyKeyReused):
            await store.checkout(placing, version=version)
    elif earlier is not None:
        placement = await store.checkout(placing, version=version)
        assert (placement.order, placement.replayed) == (earlier, True)
    elif skew:
        with pytest.raises(CartConflict) as conflict:
            await store.checkout(placing, version=version)
        assert conflict.value.current == current
    elif any(n > model.stock.get(sku, 0) for sku, n in quantities(current.lines).items()):
        with pytest.raises(InsufficientStock):
            await store.checkout(placing, version=version)
    else:
        placement = await store.checkout(placing, version=version)
        assert (placement.order, placement.replayed) == (placing, False)
        for sku, count in quantities(current.lines).items():
            model.stock[sku] -= count
            model.sold[sku] = model.sold.get(sku, 0) + count
        model.carts[user] = StoredCart((), version + 1)
        if key is not None:
            model.by_key[key] = placing


async def add_stock(store: Store, model: Model, sku: str, amount: int) -> None:
    """Stock for a SKU: taken only if the store has never seen it."""
    await store.add_stock({sku: amount})
    if sku not in model.initial:
        model.initial[sku] = model.stock[sku] = amount


async def agree(store: Store, model: Model) -> None:
    """The store holds what the model does: carts, and stock that is never negative and is
    what there was less what was sold."""
    for user in map(model.name, USERS):
        assert await store.load_cart(user) == model.cart(user)
    levels = {
        sku: level for sku, level in (await store.stock_levels()).items()
        if sku.startswith(model.prefix)
    }
    assert levels == model.stock
    assert all(level >= 0 for level in levels.values())
    assert {sku: level + model.sold.get(sku, 0) for sku, level in levels.items()} == model.initial


async def apply(store: Store, seed: dict[str, int], operations: list[tuple[Any, ...]]) -> None:
    """Seed one example's stock, then run *operations*, checking the store after each."""
    model = Model(f"p{next(_examples)}-", {})
    seeded = {model.name(sku): count for sku, count in seed.items()}
    await store.add_stock(seeded)
    model.initial.update(seeded)
    model.stock.update(seeded)
    for kind, *args in operations:
        if kind == "add_stock":
            sku, amount = args
            await add_stock(store, model, model.name(sku), amount)
        elif kind == "save":
            user, wanted, skew, checked = args
            await save(store, model, model.name(user), wanted, skew, checked)
        else:
            user, skew, key = args
            await checkout(store, model, model.name(user), skew, key)
        await agree(store, model)


async def test_operations_agree_with_the_model(store: Store) -> None:
    """Saves, checkouts and stock added in any order: a conflict or refusal changes nothing,
    stock never goes negative, and sold plus on hand is what there was."""

    @EXAMPLES
    @given(SEED, OPERATIONS)
    @example(SEED_AB, SOLD_REUSED_CONFLICTED_REPLAYED_SHORT)
    @example(SEED_AB, EMPTY_NEW_SKU_STALE_CHECKED)
    def run_example(seed: dict[str, int], operations: list[tuple[Any, ...]]) -> None:
        try:
            trio.from_thread.run(apply, store, seed, operations)
        except AssertionError as failure:  # hypothesis prints blank arguments from a thread
            failure.add_note(f"seed={seed!r} operations={operations!r}")
            raise

    await trio.to_thread.run_sync(run_example)
