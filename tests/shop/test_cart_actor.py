"""Tests of the cart actor driven directly on a real actor host, bus and in-memory store: what
only a memory double can show (failures on demand, conflicts counted, virtual time); what
every store must do is in test_cart_on_stores.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import pytest
import trio
import trio.testing

from trioshop.domain import (
    CartEmpty,
    CartLine,
    CartView,
    IdempotencyKeyReused,
    InsufficientStock,
    ItemNotInCart,
    Order,
    Placement,
)
from trioshop.runtime import (
    CONFLICT_ATTEMPTS,
    Actor,
    ActorCrashed,
    ActorHost,
    EventBus,
    Ticket,
    open_actor_host,
    open_event_bus,
)
from trioshop.shop.cart_actor import (
    AddItem,
    Cart,
    CartDeps,
    Checkout,
    ClearCart,
    RemoveItem,
    ViewCart,
    cart_name,
    new_cart,
)
from trioshop.store import CartConflict, CartWrite, MemoryStore, Store, StoredCart, StoreError

T = TypeVar("T")

STOCK = {"KB-002": 200, "MOUSE-003": 300, "LAPTOP-001": 5}
KEYBOARD = CartLine("KB-002", "Mechanical Keyboard", 14999, 1)
MOUSE = CartLine("MOUSE-003", "Wireless Mouse", 7999, 1)
LAPTOP = CartLine("LAPTOP-001", "Laptop Pro 16", 149999, 1)


def qty(line: CartLine, quantity: int) -> CartLine:
    """*line* with *quantity*."""
    return attrs.evolve(line, quantity=quantity)


@attrs.define
class FailingStore(MemoryStore):
    """A memory store whose cart saves or checkouts fail on demand, like a full disk.

    It counts the conflicts it answers, and *before_write*, if set, runs before each cart
    save or checkout: what another node does just then.
    """

    fail_saves: bool = attrs.field(default=False, init=False)
    fail_checkouts: bool = attrs.field(default=False, init=False)
    conflicts: int = attrs.field(default=0, init=False)
    before_write: Callable[[], Awaitable[None]] | None = attrs.field(default=None, init=False)

    async def _write(self, failure: str | None, write: Callable[[], Awaitable[T]]) -> T:
        """*write*, unless *failure* says why it fails; *before_write* first, conflicts counted."""
        if failure is not None:
            raise StoreError(failure)
        if self.before_write is not None:
            await self.before_write()
        try:
            return await write()
        except CartConflict:
            self.conflicts += 1
            raise

    async def save_cart(self, write: CartWrite, **options: Any) -> int:
        failure = "disk full" if self.fail_saves else None
        return await self._write(
            failure, lambda: super(FailingStore, self).save_cart(write, **options)
        )

    async def checkout(self, order: Order, **options: Any) -> Placement:
        failure = "database locked" if self.fail_checkouts else None
        return await self._write(
            failure, lambda: super(FailingStore, self).checkout(order, **options)
        )


@attrs.define
class SharedStore(FailingStore):
    """The same, but not exclusive: as if other nodes wrote to it too (like PostgreSQL)."""

    async def changed_elsewhere(self, user_id: str, version: int) -> bool:
        return await self.cart_version(user_id) != version


async def elsewhere(store: Store, user_id: str, *lines: CartLine) -> int:
    """Another node stores *lines* as the user's cart, at the version the store has."""
    return await store.save_cart(
        CartWrite(user_id=user_id, lines=lines, version=await store.cart_version(user_id))
    )


@attrs.define
class World:
    """A running host, bus and store, with the deps every cart gets."""

    host: ActorHost
    bus: EventBus
    store: MemoryStore
    deps: CartDeps

    def spawn(self, user_id: str = "alice", **kwargs: Any) -> Actor:
        return self.host.spawn(new_cart(user_id, self.deps), name=cart_name(user_id), **kwargs)

    async def ask(self, actor: Actor, message: object) -> Any:
        return await self.host.request(actor, message, timeout=1)

    async def view(self, actor: Actor) -> CartView:
        view: CartView = await self.ask(actor, ViewCart())
        return view


@asynccontextmanager
async def open_world(store: MemoryStore | None = None, **host_options: Any) -> AsyncIterator[World]:
    """A host, bus and *store* (stocked with STOCK) running for the block."""
    store = MemoryStore() if store is None else store
    await store.add_stock(STOCK)
    async with open_actor_host(**host_options) as host:
        with open_event_bus() as bus:
            yield World(host, bus, store, CartDeps(bus, store))


@pytest.fixture
async def world() -> AsyncIterator[World]:
    """A running world on a plain memory store."""
    async with open_world() as opened:
        yield opened


async def test_new_cart_is_empty(world: World) -> None:
    """A cart for a user with nothing stored starts with no lines and a zero total."""
    cart = world.spawn()
    assert await world.view(cart) == CartView("alice", (), 0)


async def test_new_cart_returns_a_cart_behaviour() -> None:
    """The registry's factory builds a Cart for the given user with the given deps."""
    store: Store = MemoryStore()
    with open_event_bus() as bus:
        deps = CartDeps(bus, store)
        cart = new_cart("bob", deps)
    assert isinstance(cart, Cart)
    assert (cart.user_id, cart.deps) == ("bob", deps)


async def test_add_reply_keeps_first_price(world: World) -> None:
    """A repeated add at a new price is answered with the added quantity at the first price."""
    cart = world.spawn()
    await world.ask(cart, AddItem(qty(KEYBOARD, 1)))
    added = await world.ask(cart, AddItem(CartLine("KB-002", "Keyboard v2", 19999, 2)))
    assert (added.price_cents, added.quantity) == (14999, 2)
    assert (await world.view(cart)).lines == (qty(KEYBOARD, 3),)


async def test_add_of_unstocked_sku_refused(world: World) -> None:
    """A SKU the store has no stock for cannot be added at all."""
    cart = world.spawn()
    with pytest.raises(InsufficientStock):
        await world.ask(cart, AddItem(CartLine("GHOST", "Ghost", 100, 1)))
    assert await world.view(cart) == CartView("alice", (), 0)
    assert await world.store.load_cart("alice") == StoredCart((), 0)


async def test_remove_missing_sku_refused(world: World) -> None:
    """Removing a SKU the cart does not hold raises ItemNotInCart; the cart is unchanged."""
    cart = world.spawn()
    await world.ask(cart, AddItem(KEYBOARD))
    with pytest.raises(ItemNotInCart) as caught:
        await world.ask(cart, RemoveItem("MOUSE-003"))
    assert caught.value.sku == "MOUSE-003"
    assert (await world.view(cart)).lines == (KEYBOARD,)


async def test_remove_drops_line_and_saves(world: World) -> None:
    """Removing a line answers the new view and the store holds the same lines."""
    cart = world.spawn()
    await world.ask(cart, AddItem(KEYBOARD))
    await world.ask(cart, AddItem(qty(MOUSE, 2)))
    view = await world.ask(cart, RemoveItem("KB-002"))
    assert view == CartView("alice", (qty(MOUSE, 2),), 2 * 7999)
    assert await world.store.load_cart("alice") == StoredCart((qty(MOUSE, 2),), 3)


async def test_removing_last_line_empties_stored_cart(world: World) -> None:
    """Once the last line is removed the store holds no cart with lines for the user."""
    cart = world.spawn()
    await world.ask(cart, AddItem(KEYBOARD))
    await world.ask(cart, RemoveItem("KB-002"))
    assert await world.store.load_cart("alice") == StoredCart((), 2)
    assert not await world.store.has_cart("alice")
    assert world.host.lookup("cart:alice") is cart


async def test_checkout_keeps_idempotency_key(world: World) -> None:
    """A checkout with a key stores the order under that key."""
    cart = world.spawn()
    await world.ask(cart, AddItem(KEYBOARD))
    placement = await world.ask(cart, Checkout("key-1"))
    assert placement.order.idempotency_key == "key-1"
    assert await world.store.order_by_key("key-1") == placement.order


async def test_checkout_of_empty_cart_refused(world: World) -> None:
    """Checking out a cart with no lines raises CartEmpty; the cart stays live."""
    subscription = world.bus.subscribe("shop", "order.checkout", name="test")
    cart = world.spawn()
    with pytest.raises(CartEmpty):
        await world.ask(cart, Checkout())
    assert world.host.lookup("cart:alice") is cart
    assert world.bus.published == 0
    assert subscription.backlog == 0


async def test_checkout_replay_answers_earlier_order_and_cart_stays(world: World) -> None:
    """A key this user used before answers its earlier order; the new cart stays with its lines."""
    subscription = world.bus.subscribe("shop", "order.checkout", name="test")
    first = world.spawn()
    await world.ask(first, AddItem(qty(KEYBOARD, 2)))
    earlier = (await world.ask(first, Checkout("key-1"))).order
    subscription.receive_nowait()

    second = world.spawn()  # the name was released by the checkout
    await world.ask(second, AddItem(MOUSE))
    placement = await world.ask(second, Checkout("key-1"))
    assert placement == Placement(earlier, replayed=True)
    assert world.host.lookup("cart:alice") is second
    assert (await world.view(second)).lines == (MOUSE,)
    assert (await world.store.load_cart("alice")).lines == (MOUSE,)
    assert await world.store.stock_levels() == {**STOCK, "KB-002": 198}
    assert world.deps.counters.checkouts == 1
    with pytest.raises(trio.WouldBlock):
        subscription.receive_nowait()


async def test_checkout_with_another_users_key_refused(world: World) -> None:
    """A key used by another user's checkout raises IdempotencyKeyReused; the cart stays."""
    bob = world.spawn("bob")
    await world.ask(bob, AddItem(KEYBOARD))
    await world.ask(bob, Checkout("shared"))
    alice = world.spawn("alice")
    await world.ask(alice, AddItem(MOUSE))
    with pytest.raises(IdempotencyKeyReused):
        await world.ask(alice, Checkout("shared"))
    assert world.host.lookup("cart:alice") is alice
    assert (await world.view(alice)).lines == (MOUSE,)


def meddle(
    store: FailingStore, action: Callable[[], Awaitable[object]], times: int | None = 1
) -> None:
    """Have another node run *action* just before each of the store's next *times* cart
    writes (``None``: every one); the other node's own writes go straight in."""
    left = times

    async def before_write() -> None:
        nonlocal left
        if left == 0:
            return
        if left is not None:
            left -= 1
        store.before_write = None
        try:
            await action()
        finally:
            store.before_write = before_write

    store.before_write = before_write


async def test_add_after_change_elsewhere_reloads_and_reapplies() -> None:
    """On an exclusive store, an add over a cart changed elsewhere conflicts, reloads and adds."""
    store = FailingStore()
    assert not await store.changed_elsewhere("alice", 5)  # exclusive: its copy is the truth
    async with open_world(store) as world:
        cart = world.spawn()
        await world.ask(cart, AddItem(KEYBOARD))
        assert await elsewhere(store, "alice", KEYBOARD, qty(MOUSE, 2)) == 2
        added = await world.ask(cart, AddItem(KEYBOARD))
        assert added == KEYBOARD  # answered as the add it was
        both = (qty(KEYBOARD, 2), qty(MOUSE, 2))  # the add stays an add, over the other change
        assert (await world.view(cart)).lines == both
        assert await store.load_cart("alice") == StoredCart(both, 3)
        assert store.conflicts == 1
        await world.ask(cart, RemoveItem("MOUSE-003"))  # the actor now holds the new version
        assert await store.load_cart("alice") == StoredCart((qty(KEYBOARD, 2),), 4)
        assert store.conflicts == 1


async def test_checkout_after_cart_emptied_elsewhere_refused() -> None:
    """A checkout of a cart emptied elsewhere raises CartEmpty; the cart lives on, empty."""
    store = FailingStore()
    async with open_world(store) as world:
        cart = world.spawn()
        await world.ask(cart, AddItem(KEYBOARD))
        await elsewhere(store, "alice")
        with pytest.raises(CartEmpty):
            await world.ask(cart, Checkout())
        assert world.host.lookup("cart:alice") is cart
        assert (await world.view(cart)).lines == ()
        assert await store.orders_for("alice") == []
        assert (await store.stock_levels()).get("KB-002", 0) == 200


async def test_keyed_add_stored_elsewhere_meanwhile_is_answered_not_repeated() -> None:
    """An add whose key another node stored just before it is answered with that add, once."""
    store = FailingStore()
    async with open_world(store) as world:
        cart = world.spawn()
        await world.ask(cart, AddItem(MOUSE))
        other_answer = qty(KEYBOARD, 2)

        async def same_add_elsewhere() -> None:
            await store.save_cart(
                CartWrite(
                    user_id="alice",
                    lines=(MOUSE, other_answer),
                    version=1,
                    add_key=("k", other_answer),
                )
            )

        meddle(store, same_add_elsewhere)
        assert await world.ask(cart, AddItem(qty(KEYBOARD, 2), "k")) == other_answer
        assert store.conflicts == 1
        assert (await world.view(cart)).lines == (MOUSE, qty(KEYBOARD, 2))  # not 4
        assert await store.load_cart("alice") == StoredCart((MOUSE, qty(KEYBOARD, 2)), 2)


async def test_conflict_storm_stops_retrying_at_the_requests_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A cart changed elsewhere before every (slow) write gives up at its request's deadline."""
    store = FailingStore()
    async with open_world(store) as world:
        cart = world.spawn()

        async def slowly_elsewhere() -> None:
            await trio.sleep(1)
            await elsewhere(store, "alice", MOUSE)

        meddle(store, slowly_elsewhere, times=None)
        ticket = Ticket(deadline=trio.current_time() + 5)
        with pytest.raises(StoreError, match="kept changing"):
            await world.host.request(cart, AddItem(KEYBOARD, None, ticket), timeout=100)
        assert store.conflicts <= 6  # one a second until the deadline, not CONFLICT_ATTEMPTS
        assert trio.current_time() <= ticket.deadline + 1


async def test_cart_changing_on_every_write_gives_up_with_store_error() -> None:
    """A cart changed elsewhere before every write gives up after a few tries, adding nothing."""
    store = FailingStore()
    async with open_world(store) as world:
        cart = world.spawn()
        await world.ask(cart, AddItem(MOUSE))
        meddle(store, lambda: elsewhere(store, "alice", MOUSE), times=None)
        with pytest.raises(StoreError, match="kept changing"):
            await world.ask(cart, AddItem(KEYBOARD))
        store.before_write = None
        assert store.conflicts == CONFLICT_ATTEMPTS
        assert await store.load_cart("alice") == StoredCart((MOUSE,), 1 + CONFLICT_ATTEMPTS)
        assert world.host.lookup("cart:alice") is cart
        assert (await world.view(cart)).lines == (MOUSE,)
        await world.ask(cart, AddItem(KEYBOARD))  # once it settles, the cart serves again
        assert (await world.view(cart)).lines == (MOUSE, KEYBOARD)


async def test_shared_store_is_read_before_a_view() -> None:
    """On a shared store a view checks the stored version first: it never answers stale lines."""
    # A change, by contrast, goes straight to its conditional write, which conflicts, reloads
    # and re-applies.
    store = SharedStore()
    async with open_world(store) as world:
        cart = world.spawn()
        await world.ask(cart, AddItem(KEYBOARD))
        await elsewhere(store, "alice", KEYBOARD, MOUSE)
        assert (await world.view(cart)).lines == (KEYBOARD, MOUSE)
        await world.ask(cart, AddItem(MOUSE))
        assert await store.load_cart("alice") == StoredCart((KEYBOARD, qty(MOUSE, 2)), 3)
        assert store.conflicts == 0
        await elsewhere(store, "alice", KEYBOARD)  # the mice were removed on another node
        await world.ask(cart, AddItem(KEYBOARD))
        assert store.conflicts == 1
        assert await store.load_cart("alice") == StoredCart((qty(KEYBOARD, 2),), 5)


async def test_shared_store_refusal_on_a_stale_copy_is_decided_again() -> None:
    """Removing a line only another node added is refused by the stale copy, then done."""
    store = SharedStore()
    async with open_world(store) as world:
        cart = world.spawn()
        await world.ask(cart, AddItem(KEYBOARD))
        await elsewhere(store, "alice", KEYBOARD, MOUSE)
        view = await world.ask(cart, RemoveItem("MOUSE-003"))
        assert view.lines == (KEYBOARD,)
        with pytest.raises(ItemNotInCart):  # fresh now: a real refusal stands
            await world.ask(cart, RemoveItem("MOUSE-003"))


async def test_store_error_on_save_reaches_caller_and_cart_unchanged() -> None:
    """A failing save raises StoreError in the caller; lines stay as they were, the actor lives."""
    store = FailingStore()
    async with open_world(store) as world:
        cart = world.spawn()
        await world.ask(cart, AddItem(KEYBOARD))
        store.fail_saves = True
        with pytest.raises(StoreError, match="disk full"):
            await world.ask(cart, AddItem(MOUSE))
        with pytest.raises(StoreError):
            await world.ask(cart, RemoveItem("KB-002"))
        with pytest.raises(StoreError):
            await world.ask(cart, ClearCart())
        assert world.host.lookup("cart:alice") is cart
        assert (await world.view(cart)).lines == (KEYBOARD,)
        assert await store.load_cart("alice") == StoredCart((KEYBOARD,), 1)
        store.fail_saves = False
        await world.ask(cart, AddItem(MOUSE))
        assert (await world.view(cart)).lines == (KEYBOARD, MOUSE)


async def test_store_error_on_checkout_keeps_cart() -> None:
    """A failing checkout raises StoreError; nothing is published and the cart keeps its lines."""
    store = FailingStore()
    async with open_world(store) as world:
        cart = world.spawn()
        await world.ask(cart, AddItem(qty(KEYBOARD, 2)))
        store.fail_checkouts = True
        with pytest.raises(StoreError, match="database locked"):
            await world.ask(cart, Checkout())
        assert world.bus.published == 0
        assert world.host.lookup("cart:alice") is cart
        assert (await world.view(cart)).lines == (qty(KEYBOARD, 2),)
        assert (await store.stock_levels()).get("KB-002", 0) == 200
        store.fail_checkouts = False
        placement = await world.ask(cart, Checkout())
        assert placement.order.lines == (qty(KEYBOARD, 2),)


async def test_clear_empties_stored_cart_and_ends(world: World) -> None:
    """Clearing empties the stored cart and ends the actor; a new cart for the user is empty."""
    cart = world.spawn()
    await world.ask(cart, AddItem(KEYBOARD))
    assert await world.ask(cart, ClearCart()) is None
    assert world.host.lookup("cart:alice") is None
    assert await world.store.load_cart("alice") == StoredCart((), 2)
    assert not await world.store.has_cart("alice")
    await trio.testing.wait_all_tasks_blocked()
    assert cart.ended
    assert await world.view(world.spawn()) == CartView("alice", (), 0)


async def test_fresh_cart_reloads_stored_lines_and_version() -> None:
    """A new actor for a user with a stored cart starts with its lines and version (on_start)."""
    store = FailingStore()
    async with open_world(store) as world:
        await store.save_cart(
            CartWrite(user_id="alice", lines=(qty(KEYBOARD, 2), MOUSE), version=0)
        )
        await store.save_cart(
            CartWrite(user_id="alice", lines=(qty(KEYBOARD, 2), MOUSE), version=1)
        )
        cart = world.spawn()
        view = await world.view(cart)
        assert view.lines == (qty(KEYBOARD, 2), MOUSE)
        assert view.total_cents == 2 * 14999 + 7999
        await world.ask(cart, AddItem(MOUSE))
        assert await store.load_cart("alice") == StoredCart((qty(KEYBOARD, 2), qty(MOUSE, 2)), 3)
        assert store.conflicts == 0  # it wrote at the version it loaded


async def test_passivated_cart_restarts_with_its_lines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An idle cart is passivated; a cart spawned again for the user reloads its lines."""
    async with open_world(idle_check_interval=1.0) as world:
        first = world.spawn(idle_timeout=5.0)
        await world.ask(first, AddItem(qty(KEYBOARD, 2)))
        await world.ask(first, AddItem(MOUSE))
        await trio.sleep(10)  # virtual time: past the idle timeout and the next idle check
        assert world.host.lookup("cart:alice") is None
        assert first.ended
        assert world.host.statistics().passivated == 1
        second = world.spawn(idle_timeout=5.0)
        assert second is not first
        assert (await world.view(second)).lines == (qty(KEYBOARD, 2), MOUSE)


async def test_unknown_message_crashes_cart(world: World) -> None:
    """A message the cart does not know is a crash: the caller gets ActorCrashed."""
    cart = world.spawn()
    with pytest.raises(ActorCrashed):
        await world.ask(cart, "hello")
    assert cart.crashed
    await trio.testing.wait_all_tasks_blocked()  # the name is released as the task unwinds
    assert world.host.lookup("cart:alice") is None
    assert world.host.statistics().crashed == 1
