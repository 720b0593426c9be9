"""In-process API tests of the failure paths: deadlines, full mailboxes, limits, crashes."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from tests.helpers import live_cart_names, open_shop_client
from trioshop.config import Settings
from trioshop.registry import Registry
from trioshop.runtime import ActorContext
from trioshop.shop.cart_actor import AddItem, Cart, CartDeps, ViewCart


class UnresponsiveCart(Cart):
    """Acknowledges adds, then never answers anything else."""

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        if isinstance(message, AddItem):
            return await super().handle(ctx, message)
        await trio.sleep_forever()


class CrashingCart(Cart):
    """Acknowledges adds, crashes when viewed."""

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        if isinstance(message, ViewCart):
            raise RuntimeError("cart bug")
        return await super().handle(ctx, message)


def unresponsive(user_id: str, deps: CartDeps) -> Cart:
    return UnresponsiveCart(user_id, deps)


def crashing(user_id: str, deps: CartDeps) -> Cart:
    return CrashingCart(user_id, deps)


# The stuck cart never started the checkout: the 504 can promise nothing happened.
CHECKOUT_ABANDONED = "Checkout timed out; nothing was changed"


@pytest.mark.parametrize(
    ("settings", "method", "path", "message", "seconds"),
    [
        (Settings(), "GET", "/api/cart/alice", "Cart process did not respond", 3.0),
        (Settings(), "POST", "/api/cart/alice/checkout", CHECKOUT_ABANDONED, 5.0),
        (Settings(read_timeout=0.5), "GET", "/api/cart/alice", "Cart process did not respond", 0.5),
        (Settings(checkout_timeout=1.0), "POST", "/api/cart/alice/checkout",
         CHECKOUT_ABANDONED, 1.0),
    ],
)
async def test_unanswered_cart_is_504_after_its_deadline(
    registry: Registry,
    autojump_clock: trio.testing.MockClock,
    settings: Settings,
    method: str,
    path: str,
    message: str,
    seconds: float,
) -> None:
    """A cart that does not answer gives a 504 after exactly the configured deadline."""
    async with open_shop_client(registry, settings, cart_factory=unresponsive) as client:
        assert (await client.add("alice", "KB-002"))[0] == 200
        start = trio.current_time()
        status, body, _ = await client.request(method, path)
        assert (status, body) == (504, {"error": message})
        assert trio.current_time() - start == seconds


async def test_full_mailbox_is_503_with_retry_after(
    registry: Registry, autojump_clock: trio.testing.MockClock
) -> None:
    """When a cart's mailbox is full, further requests get 503 with Retry-After at once."""
    settings = Settings(mailbox_capacity=2)
    async with open_shop_client(registry, settings, cart_factory=unresponsive) as client:
        await client.add("alice", "KB-002")
        async with trio.open_nursery() as nursery:
            for _ in range(3):  # one being handled (stuck), two queued
                nursery.start_soon(client.request, "GET", "/api/cart/alice")
            await trio.testing.wait_all_tasks_blocked()
            status, body, headers = await client.request("GET", "/api/cart/alice")
            assert status == 503
            assert headers["Retry-After"] == "1"
            assert "busy" in body["error"]


async def test_live_cart_limit_is_503(registry: Registry) -> None:
    """Past max_live_carts a new user's add gets 503 with Retry-After; existing carts work."""
    async with open_shop_client(registry, Settings(max_live_carts=2)) as client:
        assert (await client.add("a", "KB-002"))[0] == 200
        assert (await client.add("b", "KB-002"))[0] == 200
        status, body, headers = await client.add("c", "KB-002")
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert "Too many active carts" in body["error"]
        assert (await client.add("a", "KB-002"))[0] == 200


async def test_crashed_cart_is_503_and_isolated(registry: Registry) -> None:
    """A cart that crashes answers 503 for that request; other carts and the server go on."""
    async with open_shop_client(registry, cart_factory=crashing) as client:
        await client.add("alice", "KB-002")
        await client.add("bob", "KB-002")
        status, body, _ = await client.request("GET", "/api/cart/alice")
        assert status == 503
        assert "error" in body
        await trio.testing.wait_all_tasks_blocked()
        assert "cart:alice" not in live_cart_names(client.shop)
        assert "cart:bob" in live_cart_names(client.shop)
        assert (await client.add("alice", "MOUSE-003"))[0] == 200
        status, _, _ = await client.request("GET", "/healthz")
        assert status == 200
