"""API tests of stock, idempotent checkout, order endpoints, passivation and durability."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from tests.helpers import ShopClient, open_shop_client
from trioshop.config import Settings
from trioshop.registry import Registry, load_registry


def with_laptop_stock(registry_dir: Path, stock: int) -> Registry:
    products = registry_dir / "products.yaml"
    products.write_text(products.read_text().replace("stock: 50", f"stock: {stock}"))
    return load_registry(registry_dir)


async def checkout(client: ShopClient, user: str, key: str | None = None) -> tuple[int, dict]:
    headers = {"Idempotency-Key": key} if key else {}
    response = await client.client.post(f"/api/cart/{user}/checkout", headers=headers)
    return response.status_code, await response.get_json()


async def test_products_show_live_stock(shop_client: ShopClient) -> None:
    """Checkout decrements the stock GET /api/products shows."""
    await shop_client.add("alice", "KB-002", 3)
    await checkout(shop_client, "alice")
    _, body, _ = await shop_client.request("GET", "/api/products")
    stock = {p["sku"]: p["stock"] for p in body["products"]}
    assert stock["KB-002"] == 197
    assert stock["LAPTOP-001"] == 50


async def test_add_beyond_stock_is_409(registry_copy: Path) -> None:
    """Adding more of a SKU than is in stock is a 409 and leaves the cart as it was."""
    async with open_shop_client(with_laptop_stock(registry_copy, 3)) as client:
        assert (await client.add("alice", "LAPTOP-001", 2))[0] == 200
        status, body, _ = await client.add("alice", "LAPTOP-001", 2)
        assert (status, body) == (
            409, {"error": "Insufficient stock for LAPTOP-001: requested 4, available 3"}
        )
        _, cart, _ = await client.request("GET", "/api/cart/alice")
        assert cart["items"][0]["quantity"] == 2


async def test_twenty_concurrent_checkouts_never_oversell(registry_copy: Path) -> None:
    """Stock 5, 20 users checking out one unit at once: exactly 5 orders, 15 clean 409s."""
    async with open_shop_client(with_laptop_stock(registry_copy, 5)) as client:
        for n in range(20):
            assert (await client.add(f"u{n}", "LAPTOP-001"))[0] == 200
        results: dict[str, int] = {}

        async def buy(user: str) -> None:
            results[user] = (await checkout(client, user))[0]

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(buy, f"u{n}")
        assert sorted(results.values()) == [200] * 5 + [409] * 15
        refused = [user for user, status in results.items() if status == 409]
        _, cart, _ = await client.request("GET", f"/api/cart/{refused[0]}")
        assert cart["items"][0]["quantity"] == 1  # the cart stays as it was
        _, body, _ = await client.request("GET", "/api/products")
        assert body["products"][0]["stock"] == 0
        status, body = await checkout(client, refused[0])
        assert status == 409
        assert body == {"error": "Insufficient stock for LAPTOP-001: requested 1, available 0"}


async def test_idempotent_checkout(shop_client: ShopClient) -> None:
    """The same Idempotency-Key returns the same order after the cart ended; 422 for others."""
    await shop_client.add("alice", "MOUSE-003")
    status, first = await checkout(shop_client, "alice", key="key-1")
    assert status == 200
    status, again = await checkout(shop_client, "alice", key="key-1")
    assert status == 200
    assert again["order"]["order_id"] == first["order"]["order_id"]
    await shop_client.add("bob", "MOUSE-003")
    status, body = await checkout(shop_client, "bob", key="key-1")
    assert status == 422
    assert "Idempotency-Key" in body["error"]
    _, orders, _ = await shop_client.request("GET", "/api/users/alice/orders")
    assert len(orders["orders"]) == 1
    _, cart, _ = await shop_client.request("GET", "/api/cart/bob")
    assert cart["items"][0]["sku"] == "MOUSE-003"  # bob's cart untouched


async def test_concurrent_retries_with_one_key_make_one_order(shop_client: ShopClient) -> None:
    """Ten simultaneous checkouts with one key all answer the same single order."""
    await shop_client.add("alice", "MOUSE-003")
    order_ids: list[str] = []

    async def retry() -> None:
        status, body = await checkout(shop_client, "alice", key="same")
        assert status == 200
        order_ids.append(body["order"]["order_id"])

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(retry)
    assert len(set(order_ids)) == 1
    _, orders, _ = await shop_client.request("GET", "/api/users/alice/orders")
    assert len(orders["orders"]) == 1


async def test_bad_idempotency_key_is_400(shop_client: ShopClient) -> None:
    """An over-long Idempotency-Key is a 400."""
    await shop_client.add("alice", "MOUSE-003")
    status, body = await checkout(shop_client, "alice", key="k" * 300)
    assert status == 400
    assert "Idempotency-Key" in body["error"]


async def test_order_endpoints(shop_client: ShopClient) -> None:
    """Orders are found by id with per-service status, and per user newest first; 404 else."""
    ids = []
    for sku in ("MOUSE-003", "KB-002"):
        await shop_client.add("alice", sku)
        ids.append((await checkout(shop_client, "alice"))[1]["order"]["order_id"])
    await trio.testing.wait_all_tasks_blocked()
    status, body, _ = await shop_client.request("GET", f"/api/orders/{ids[0]}")
    assert status == 200
    order = body["order"]
    assert order["items"][0]["sku"] == "MOUSE-003"
    assert order["services"]["delivery"]["status"] == "dispatched"
    assert order["services"]["notifier"]["status"] == "sent"
    assert isinstance(order["services"]["delivery"]["updated_at"], float)
    status, body, _ = await shop_client.request("GET", "/api/users/alice/orders")
    assert [o["order_id"] for o in body["orders"]] == ids[::-1]
    status, body, _ = await shop_client.request("GET", "/api/orders/nope")
    assert (status, body) == (404, {"error": "Order not found: nope"})
    status, body, _ = await shop_client.request("GET", "/api/users/nobody/orders")
    assert (status, body) == (200, {"user_id": "nobody", "orders": []})


async def test_idle_cart_is_passivated_and_restored(
    registry: Registry, autojump_clock: trio.testing.MockClock
) -> None:
    """An idle cart's actor ends; the next request brings the cart back with its items."""
    async with open_shop_client(registry, Settings(cart_idle_timeout=60.0)) as client:
        await client.add("alice", "KB-002", 2)
        await client.add("bob", "MOUSE-003")
        assert client.shop.statistics().actors.live == 2
        await trio.sleep(61)
        assert client.shop.statistics().actors.live == 0  # back to the baseline
        assert client.shop.statistics().actors.passivated == 2
        _, cart, _ = await client.request("GET", "/api/cart/alice")
        assert [(i["sku"], i["quantity"]) for i in cart["items"]] == [("KB-002", 2)]
        assert client.shop.statistics().actors.live == 1
        await client.add("bob", "MOUSE-003")
        _, cart, _ = await client.request("GET", "/api/cart/bob")
        assert cart["items"][0]["quantity"] == 2
        status, _, _ = await client.request("POST", "/api/cart/alice/checkout")
        assert status == 200
        await trio.sleep(67)  # idle (60 s) plus one idle check interval (6 s)
        assert client.shop.statistics().actors.live == 0


async def test_carts_and_orders_survive_a_restart(registry: Registry, tmp_path: Path) -> None:
    """With a data dir, a new app on the same folder has the carts and orders of the old one."""
    settings = Settings(data_dir=str(tmp_path))
    async with open_shop_client(registry, settings) as client:
        await client.add("alice", "KB-002", 2)
        await client.add("bob", "MOUSE-003")
        order_id = (await checkout(client, "bob"))[1]["order"]["order_id"]
    async with open_shop_client(registry, settings) as client:
        assert client.shop.statistics().actors.live == 0
        _, cart, _ = await client.request("GET", "/api/cart/alice")
        assert [(i["sku"], i["quantity"]) for i in cart["items"]] == [("KB-002", 2)]
        status, _, _ = await client.request("GET", f"/api/orders/{order_id}")
        assert status == 200
        _, products, _ = await client.request("GET", "/api/products")
        assert {p["sku"]: p["stock"] for p in products["products"]}["MOUSE-003"] == 299
        status, _ = await checkout(client, "alice")
        assert status == 200
