"""The cart actor on each real store (memory, SQLite, PostgreSQL), not only on memory doubles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from tests.shop.test_cart_actor import KEYBOARD, LAPTOP, MOUSE, STOCK, qty
from tests.store.support import BACKENDS, Opener, backend_opener
from trioshop.domain import CartLine, CartView, InsufficientStock, ItemNotInCart, Placement
from trioshop.runtime import (
    Actor,
    ActorEnded,
    ActorHost,
    EventBus,
    open_actor_host,
    open_event_bus,
)
from trioshop.shop.cart_actor import (
    ORDER_KIND,
    ORDER_SYSTEM,
    AddItem,
    CartDeps,
    Checkout,
    RemoveItem,
    ViewCart,
    cart_name,
    new_cart,
)
from trioshop.store import CartWrite, Store, StoredCart

# Replies come from a real database here: far more than a write ever takes.
REPLY_TIMEOUT = 30.0
# No idle check runs by itself during a test: passivation is asked for (passivate_idle).
IDLE_CHECK_INTERVAL = 3600.0


@attrs.define
class World:
    """A running host and bus, and a store of one backend, with the deps every cart gets."""

    host: ActorHost
    bus: EventBus
    store: Store
    deps: CartDeps

    def spawn(self, user_id: str = "alice") -> Actor:
        """A cart actor for *user_id* that may be passivated as soon as it is idle."""
        return self.host.spawn(
            new_cart(user_id, self.deps), name=cart_name(user_id), idle_timeout=0.0
        )

    async def ask(self, actor: Actor, message: object) -> Any:
        return await self.host.request(actor, message, timeout=REPLY_TIMEOUT)

    async def view(self, actor: Actor) -> CartView:
        view: CartView = await self.ask(actor, ViewCart())
        return view

    async def elsewhere(self, user_id: str, *lines: CartLine) -> int:
        """Another writer (a node, a stale actor) stores *lines* as the user's cart."""
        version = await self.store.cart_version(user_id)
        return await self.store.save_cart(CartWrite(user_id=user_id, lines=lines, version=version))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """How to open a store of each backend, stocked with STOCK."""
    with backend_opener(request.param, tmp_path, STOCK) as opener:
        yield opener


@pytest.fixture
async def world(backend: Opener) -> AsyncIterator[World]:
    """A host and bus over a store of each backend, for the test."""
    async with backend() as store, open_actor_host(
        idle_check_interval=IDLE_CHECK_INTERVAL
    ) as host:
        with open_event_bus() as bus:
            yield World(host, bus, store, CartDeps(bus, store))


async def test_adds_merge_and_are_stored_before_the_reply(world: World) -> None:
    """Each add is in the store when answered; adds of one SKU merge into its line."""
    cart = world.spawn()
    assert await world.ask(cart, AddItem(KEYBOARD)) == KEYBOARD
    assert await world.store.load_cart("alice") == StoredCart((KEYBOARD,), 1)
    assert await world.store.has_cart("alice")
    await world.ask(cart, AddItem(qty(MOUSE, 3)))
    await world.ask(cart, AddItem(qty(KEYBOARD, 2)))
    lines = (qty(KEYBOARD, 3), qty(MOUSE, 3))
    assert await world.view(cart) == CartView("alice", lines, 3 * 14999 + 3 * 7999)
    assert await world.store.load_cart("alice") == StoredCart(lines, 3)


async def test_an_add_past_the_stock_is_refused_and_changes_nothing(world: World) -> None:
    """An add that would hold more than the stock is refused; cart and store stay as they were."""
    cart = world.spawn()
    await world.ask(cart, AddItem(qty(LAPTOP, 3)))
    with pytest.raises(InsufficientStock) as refused:
        await world.ask(cart, AddItem(qty(LAPTOP, 3)))
    assert (refused.value.sku, refused.value.requested, refused.value.available) == (
        "LAPTOP-001", 6, 5,
    )
    assert world.host.lookup(cart_name("alice")) is cart
    assert (await world.view(cart)).lines == (qty(LAPTOP, 3),)
    assert await world.store.load_cart("alice") == StoredCart((qty(LAPTOP, 3),), 1)
    await world.ask(cart, AddItem(qty(LAPTOP, 2)))  # still serving: up to the stock is fine
    assert (await world.view(cart)).lines == (qty(LAPTOP, 5),)


async def test_a_keyed_add_sent_twice_is_added_once(world: World) -> None:
    """The retry of an add with an idempotency key is answered again, not added again."""
    cart = world.spawn()
    first = await world.ask(cart, AddItem(qty(MOUSE, 2), "key-1"))
    assert await world.ask(cart, AddItem(qty(MOUSE, 2), "key-1")) == first
    assert await world.store.load_cart("alice") == StoredCart((qty(MOUSE, 2),), 1)
    assert await world.store.added_with_key("alice", "key-1") == qty(MOUSE, 2)


async def test_a_change_over_a_cart_changed_elsewhere_reloads_and_reapplies(
    world: World,
) -> None:
    """An add or a remove over a cart another writer changed conflicts, reloads the stored
    cart, and is applied to it: the other change is kept."""
    cart = world.spawn()
    await world.ask(cart, AddItem(KEYBOARD))
    assert await world.elsewhere("alice", KEYBOARD, qty(MOUSE, 2)) == 2
    assert await world.ask(cart, AddItem(KEYBOARD)) == KEYBOARD
    both = (qty(KEYBOARD, 2), qty(MOUSE, 2))
    assert (await world.view(cart)).lines == both
    assert await world.store.load_cart("alice") == StoredCart(both, 3)
    await world.elsewhere("alice", *both, LAPTOP)
    view = await world.ask(cart, RemoveItem("KB-002"))
    assert view.lines == (qty(MOUSE, 2), LAPTOP)
    assert await world.store.load_cart("alice") == StoredCart(view.lines, 5)
    await world.elsewhere("alice", LAPTOP)
    with pytest.raises(ItemNotInCart):  # removed elsewhere meanwhile
        await world.ask(cart, RemoveItem("MOUSE-003"))
    assert (await world.view(cart)).lines == (LAPTOP,)
    assert world.host.lookup(cart_name("alice")) is cart


async def test_checkout_stores_the_order_takes_the_stock_and_ends_the_cart(
    world: World,
) -> None:
    """Checkout stores the order, reserves its stock, empties the stored cart, publishes the
    order once and ends the actor."""
    subscription = world.bus.subscribe(ORDER_SYSTEM, ORDER_KIND, name="test")
    cart = world.spawn()
    await world.ask(cart, AddItem(qty(KEYBOARD, 2)))
    await world.ask(cart, AddItem(MOUSE))
    placement = await world.ask(cart, Checkout("key-1"))
    assert isinstance(placement, Placement)
    assert not placement.replayed
    order = placement.order
    assert (order.user_id, order.lines, order.idempotency_key) == (
        "alice", (qty(KEYBOARD, 2), MOUSE), "key-1",
    )
    assert order.total_cents == 2 * 14999 + 7999
    event = subscription.receive_nowait()
    assert (event.system, event.kind, event.path) == (ORDER_SYSTEM, ORDER_KIND, "/orders/alice")
    assert event.data == order
    with pytest.raises(trio.WouldBlock):  # published once
        subscription.receive_nowait()
    stored = await world.store.order(order.order_id)
    assert stored is not None
    assert stored.order == order
    assert await world.store.order_by_key("key-1") == order
    assert await world.store.load_cart("alice") == StoredCart((), 3)
    assert await world.store.stock_levels() == {**STOCK, "KB-002": 198, "MOUSE-003": 299}
    counters = world.deps.counters
    assert (counters.checkouts, counters.revenue_cents) == (1, order.total_cents)
    assert world.host.lookup(cart_name("alice")) is None
    await trio.testing.wait_all_tasks_blocked()  # the actor unwinds (no I/O)
    assert cart.ended
    assert len(world.host) == 0
    with pytest.raises(ActorEnded):
        await world.ask(cart, ViewCart())


async def test_checkout_over_a_cart_changed_elsewhere_orders_the_stored_lines(
    world: World,
) -> None:
    """A checkout over a cart another writer changed orders the lines as stored now."""
    subscription = world.bus.subscribe(ORDER_SYSTEM, ORDER_KIND, name="test")
    cart = world.spawn()
    await world.ask(cart, AddItem(qty(KEYBOARD, 2)))
    await world.elsewhere("alice", MOUSE)
    placement = await world.ask(cart, Checkout())
    assert placement.order.lines == (MOUSE,)
    assert placement.order.total_cents == 7999
    assert subscription.receive_nowait().data == placement.order
    assert world.host.lookup(cart_name("alice")) is None
    assert await world.store.stock_levels() == {**STOCK, "MOUSE-003": 299}
    assert await world.store.load_cart("alice") == StoredCart((), 3)


async def test_checkout_short_of_stock_is_refused_and_the_cart_stays(world: World) -> None:
    """When another cart bought the stock first, checkout is refused; nothing changes."""
    alice, bob = world.spawn("alice"), world.spawn("bob")
    await world.ask(alice, AddItem(qty(LAPTOP, 4)))
    await world.ask(bob, AddItem(qty(LAPTOP, 2)))
    await world.ask(alice, Checkout())
    with pytest.raises(InsufficientStock) as refused:
        await world.ask(bob, Checkout())
    assert (refused.value.requested, refused.value.available) == (2, 1)
    assert world.host.lookup(cart_name("bob")) is bob
    assert (await world.view(bob)).lines == (qty(LAPTOP, 2),)
    assert await world.store.load_cart("bob") == StoredCart((qty(LAPTOP, 2),), 1)
    assert await world.store.stock_levels() == {**STOCK, "LAPTOP-001": 1}
    assert world.bus.published == 1


async def test_a_passivated_cart_comes_back_with_its_lines(world: World) -> None:
    """An idle cart is passivated; the next actor for the user reloads lines and version from
    the store and writes on from there without a conflict."""
    first = world.spawn()
    await world.ask(first, AddItem(qty(KEYBOARD, 2)))
    await world.ask(first, AddItem(MOUSE))
    assert world.host.passivate_idle() == 1
    assert world.host.lookup(cart_name("alice")) is None
    second = world.spawn()
    assert second is not first
    assert (await world.view(second)).lines == (qty(KEYBOARD, 2), MOUSE)
    await world.ask(second, AddItem(MOUSE))
    stored = StoredCart((qty(KEYBOARD, 2), qty(MOUSE, 2)), 3)
    assert await world.store.load_cart("alice") == stored
    await trio.testing.wait_all_tasks_blocked()  # the first actor unwinds (no I/O)
    assert first.ended
    assert world.host.statistics().passivated == 1
