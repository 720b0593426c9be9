"""Tests of the cart API (Carts) driven directly on a shop opened by the assembly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.helpers import live_cart_names
from trioshop.config import Settings
from trioshop.domain import (
    CartEmpty,
    CartLine,
    IdempotencyKeyReused,
    InsufficientStock,
    ItemNotInCart,
    NoActiveCart,
)
from trioshop.registry import Product, Registry, load_registry
from trioshop.shop import Shop
from trioshop.shop.assembly import open_shop


@pytest.fixture
async def shop(registry: Registry) -> AsyncIterator[Shop]:
    """A shop on the shipped registry, in memory, with default settings."""
    async with open_shop(registry, Settings()) as opened:
        yield opened


def product(shop: Shop, sku: str) -> Product:
    """The current catalog's product *sku*."""
    found = shop.catalog.get(sku)
    assert found is not None, sku
    return found


def line(shop: Shop, sku: str, quantity: int = 1) -> CartLine:
    """The line the HTTP layer would add: the catalog's current title and price."""
    p = product(shop, sku)
    return CartLine(p.sku, p.title, p.price_cents, quantity)


async def test_concurrent_first_adds_share_one_cart(shop: Shop) -> None:
    """Fifty simultaneous first adds for a new user end in one cart holding all fifty."""
    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(shop.carts.add_item, "newbie", line(shop, "MOUSE-003"))
    view = await shop.carts.view("newbie")
    assert view is not None
    assert [(x.sku, x.quantity) for x in view.lines] == [("MOUSE-003", 50)]
    assert view.total_cents == 50 * 7999
    assert live_cart_names(shop) == {"cart:newbie"}
    assert shop.statistics().actors.spawned == 1


async def test_add_returns_line_as_added(shop: Shop) -> None:
    """add_item answers the line as added now, and the cart's view holds it."""
    added = await shop.carts.add_item("alice", line(shop, "KB-002", 2))
    assert added == line(shop, "KB-002", 2)
    view = await shop.carts.view("alice")
    assert view is not None
    assert view.lines == (added,)


async def test_add_over_stock_refused(shop: Shop) -> None:
    """More than the live stock raises InsufficientStock and the cart keeps what it had."""
    await shop.carts.add_item("alice", line(shop, "LAPTOP-001", 49))
    with pytest.raises(InsufficientStock):
        await shop.carts.add_item("alice", line(shop, "LAPTOP-001", 2))
    view = await shop.carts.view("alice")
    assert view is not None
    assert [x.quantity for x in view.lines] == [49]


async def test_view_of_unknown_user_is_none(shop: Shop) -> None:
    """A user who never added anything has no cart, and looking does not start one."""
    assert await shop.carts.view("nobody") is None
    assert live_cart_names(shop) == set()


async def test_checkout_of_unknown_user_refused(shop: Shop) -> None:
    """Checking out for a user without a cart raises NoActiveCart, with or without a key."""
    with pytest.raises(NoActiveCart) as caught:
        await shop.carts.checkout("nobody")
    assert caught.value.user_id == "nobody"
    with pytest.raises(NoActiveCart):
        await shop.carts.checkout("nobody", "never-used")
    assert live_cart_names(shop) == set()


async def test_remove_of_unknown_user_refused(shop: Shop) -> None:
    """Removing from a user without a cart raises NoActiveCart; a missing SKU ItemNotInCart."""
    with pytest.raises(NoActiveCart):
        await shop.carts.remove_item("nobody", "KB-002")
    await shop.carts.add_item("alice", line(shop, "KB-002"))
    with pytest.raises(ItemNotInCart):
        await shop.carts.remove_item("alice", "MOUSE-003")


async def test_checkout_places_order_and_ends_cart(shop: Shop) -> None:
    """Checkout returns the stored order, takes the stock and ends the cart."""
    keyboard = product(shop, "KB-002")
    await shop.carts.add_item("alice", line(shop, "KB-002", 3))
    order = await shop.carts.checkout("alice")
    assert (order.user_id, order.total_cents) == ("alice", 3 * keyboard.price_cents)
    stored = await shop.carts.order(order.order_id)
    assert stored is not None
    assert stored.order == order
    assert [o.order.order_id for o in await shop.carts.orders_for("alice")] == [order.order_id]
    assert (await shop.stock_levels())[keyboard.sku] == keyboard.stock - 3
    assert await shop.carts.view("alice") is None
    await trio.testing.wait_all_tasks_blocked()
    assert live_cart_names(shop) == set()


async def test_retry_with_same_key_after_cart_ended_returns_same_order(shop: Shop) -> None:
    """A retried checkout with the same key after the cart ended answers the same order once."""
    keyboard = product(shop, "KB-002")
    await shop.carts.add_item("alice", line(shop, "KB-002", 2))
    first = await shop.carts.checkout("alice", "key-1")
    await trio.testing.wait_all_tasks_blocked()
    assert live_cart_names(shop) == set()
    again = await shop.carts.checkout("alice", "key-1")
    assert again == first
    assert again.order_id == first.order_id
    assert (await shop.stock_levels())[keyboard.sku] == keyboard.stock - 2
    assert len(await shop.carts.orders_for("alice")) == 1
    assert shop.statistics().orders.checkouts == 1


async def test_retry_with_same_key_while_new_cart_live_keeps_the_cart(shop: Shop) -> None:
    """A retry while the user has a new cart answers the earlier order and leaves the new cart."""
    await shop.carts.add_item("alice", line(shop, "KB-002"))
    first = await shop.carts.checkout("alice", "key-1")
    await shop.carts.add_item("alice", line(shop, "MOUSE-003"))
    assert await shop.carts.checkout("alice", "key-1") == first
    view = await shop.carts.view("alice")
    assert view is not None
    assert [x.sku for x in view.lines] == ["MOUSE-003"]


async def test_empty_cart_with_used_key_replays(shop: Shop) -> None:
    """A live but emptied cart retried with a used key answers the earlier order, not CartEmpty."""
    await shop.carts.add_item("alice", line(shop, "KB-002"))
    first = await shop.carts.checkout("alice", "key-1")
    await shop.carts.add_item("alice", line(shop, "MOUSE-003"))
    await shop.carts.remove_item("alice", "MOUSE-003")
    assert await shop.carts.checkout("alice", "key-1") == first
    with pytest.raises(CartEmpty):
        await shop.carts.checkout("alice", "key-2")
    with pytest.raises(CartEmpty):
        await shop.carts.checkout("alice")


async def test_same_key_by_another_user_refused(shop: Shop) -> None:
    """Another user's checkout with a used key raises IdempotencyKeyReused, cart or not."""
    mouse = product(shop, "MOUSE-003")
    await shop.carts.add_item("alice", line(shop, "KB-002"))
    await shop.carts.checkout("alice", "shared")
    with pytest.raises(IdempotencyKeyReused):
        await shop.carts.checkout("bob", "shared")  # bob has no cart at all
    await shop.carts.add_item("bob", line(shop, "MOUSE-003"))
    with pytest.raises(IdempotencyKeyReused):
        await shop.carts.checkout("bob", "shared")
    view = await shop.carts.view("bob")
    assert view is not None
    assert [x.sku for x in view.lines] == ["MOUSE-003"]
    assert (await shop.stock_levels())[mouse.sku] == mouse.stock


async def test_clear_ends_actor_and_cart_is_gone(shop: Shop) -> None:
    """Clearing ends the cart actor; a later view finds no cart and starts none."""
    await shop.carts.add_item("alice", line(shop, "KB-002"))
    await shop.carts.add_item("bob", line(shop, "KB-002"))
    assert live_cart_names(shop) == {"cart:alice", "cart:bob"}
    await shop.carts.clear("alice")
    await trio.testing.wait_all_tasks_blocked()
    assert live_cart_names(shop) == {"cart:bob"}
    assert await shop.carts.view("alice") is None
    assert live_cart_names(shop) == {"cart:bob"}
    with pytest.raises(NoActiveCart):
        await shop.carts.checkout("alice")


async def test_clear_of_unknown_user_is_a_no_op(shop: Shop) -> None:
    """Clearing a user without a cart does nothing and raises nothing."""
    await shop.carts.clear("nobody")
    assert live_cart_names(shop) == set()


async def test_line_keeps_add_time_price_after_reload(shop: Shop, registry_copy: Path) -> None:
    """After a price change by reload, a line added before keeps its price; new lines don't."""
    old = product(shop, "KB-002")
    await shop.carts.add_item("alice", line(shop, "KB-002"))
    products = registry_copy / "products.yaml"
    text = products.read_text()
    assert "price: 149.99" in text
    products.write_text(text.replace("price: 149.99", "price: 199.99"))
    await shop.reload(load_registry(registry_copy))
    assert product(shop, "KB-002").price_cents == 19999

    added = await shop.carts.add_item("alice", line(shop, "KB-002", 2))
    assert added.price_cents == old.price_cents == 14999
    view = await shop.carts.view("alice")
    assert view is not None
    assert [(x.price_cents, x.quantity) for x in view.lines] == [(14999, 3)]
    assert view.total_cents == 3 * 14999
    order = await shop.carts.checkout("alice")
    assert order.total_cents == 3 * 14999

    await shop.carts.add_item("bob", line(shop, "KB-002"))
    bob = await shop.carts.view("bob")
    assert bob is not None
    assert bob.lines[0].price_cents == 19999
