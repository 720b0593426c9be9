"""In-process API tests: every row of the HTTP contract and every bad input it names."""

from __future__ import annotations

import pytest
import trio

from tests.helpers import ShopClient, live_cart_names, open_shop_client
from trioshop.config import Settings
from trioshop.registry import Registry

LAPTOP, KEYBOARD, MOUSE, MONITOR, HEADPHONES = (
    "LAPTOP-001", "KB-002", "MOUSE-003", "MON-004", "HP-005",
)


async def test_products_in_registry_order(shop_client: ShopClient) -> None:
    """GET /api/products lists the catalog with id, title, sku, price and stock, in order."""
    status, body, _ = await shop_client.request("GET", "/api/products")
    assert status == 200
    assert [p["sku"] for p in body["products"]] == [LAPTOP, KEYBOARD, MOUSE, MONITOR, HEADPHONES]
    assert body["products"][0] == {
        "id": "app:product.laptop",
        "title": "Laptop Pro 16",
        "sku": LAPTOP,
        "price": 1499.99,
        "stock": 50,
    }


async def test_add_acknowledges_the_item(shop_client: ShopClient) -> None:
    """POST items answers 'added' with the line added now, and the cart then holds it."""
    status, body, _ = await shop_client.add("alice", KEYBOARD, 2)
    assert status == 200
    assert body == {
        "status": "added",
        "user_id": "alice",
        "item": {"sku": KEYBOARD, "title": "Mechanical Keyboard", "price": 149.99, "quantity": 2},
    }


async def test_quantity_defaults_to_one(shop_client: ShopClient) -> None:
    """An add without quantity adds one."""
    status, body, _ = await shop_client.request(
        "POST", "/api/cart/alice/items", json={"sku": MOUSE}
    )
    assert status == 200
    assert body["item"]["quantity"] == 1


async def test_view_totals_exactly_in_first_added_order(shop_client: ShopClient) -> None:
    """The seed's sample cart (1 laptop + 2 keyboards) totals exactly 1799.97, lines merged."""
    await shop_client.add("alice", LAPTOP, 1)
    await shop_client.add("alice", KEYBOARD, 1)
    await shop_client.add("alice", KEYBOARD, 1)
    status, body, _ = await shop_client.request("GET", "/api/cart/alice")
    assert status == 200
    assert body["total"] == 1799.97
    assert [(i["sku"], i["quantity"]) for i in body["items"]] == [(LAPTOP, 1), (KEYBOARD, 2)]
    assert body["user_id"] == "alice"


async def test_view_without_cart(shop_client: ShopClient) -> None:
    """GET of a user with no live cart answers the empty-cart message."""
    status, body, _ = await shop_client.request("GET", "/api/cart/nobody")
    assert status == 200
    assert body == {
        "user_id": "nobody",
        "items": [],
        "total": 0,
        "message": "Cart is empty (no active session)",
    }


async def test_checkout_returns_order_and_ends_cart(shop_client: ShopClient) -> None:
    """Checkout answers the order; afterwards the cart is gone and a new add starts afresh."""
    await shop_client.add("alice", LAPTOP, 1)
    await shop_client.add("alice", HEADPHONES, 1)
    status, body, _ = await shop_client.request("POST", "/api/cart/alice/checkout")
    assert status == 200
    assert body["status"] == "checked_out"
    order = body["order"]
    assert order["user_id"] == "alice"
    assert order["total"] == 1799.98
    assert len(order["order_id"]) >= 16
    assert isinstance(order["timestamp"], int)
    assert [i["sku"] for i in order["items"]] == [LAPTOP, HEADPHONES]
    assert "cart:alice" not in live_cart_names(shop_client.shop)

    status, body, _ = await shop_client.request("GET", "/api/cart/alice")
    assert body["message"] == "Cart is empty (no active session)"
    await shop_client.add("alice", MOUSE, 3)
    _, body, _ = await shop_client.request("GET", "/api/cart/alice")
    assert [(i["sku"], i["quantity"]) for i in body["items"]] == [(MOUSE, 3)]


async def test_checkout_without_cart(shop_client: ShopClient) -> None:
    """Checkout with no live cart is a 400 'No active cart for this user'."""
    status, body, _ = await shop_client.request("POST", "/api/cart/ghost/checkout")
    assert (status, body) == (400, {"error": "No active cart for this user"})


async def test_checkout_of_empty_cart(shop_client: ShopClient) -> None:
    """Checkout of a live cart with no lines is a 400 'Cart is empty' and the cart lives on."""
    await shop_client.add("alice", MOUSE)
    await shop_client.request("DELETE", f"/api/cart/alice/items/{MOUSE}")
    status, body, _ = await shop_client.request("POST", "/api/cart/alice/checkout")
    assert (status, body) == (400, {"error": "Cart is empty"})
    assert "cart:alice" in live_cart_names(shop_client.shop)


async def test_remove_item(shop_client: ShopClient) -> None:
    """DELETE of one item answers the cart view without it; an absent item is a 404."""
    await shop_client.add("alice", LAPTOP)
    await shop_client.add("alice", MOUSE, 2)
    status, body, _ = await shop_client.request("DELETE", f"/api/cart/alice/items/{LAPTOP}")
    assert status == 200
    assert body["items"] == [
        {"sku": MOUSE, "title": "Wireless Mouse", "price": 79.99, "quantity": 2}
    ]
    assert body["total"] == 159.98
    status, body, _ = await shop_client.request("DELETE", f"/api/cart/alice/items/{LAPTOP}")
    assert (status, body) == (404, {"error": f"Item not in cart: {LAPTOP}"})
    status, _, _ = await shop_client.request("DELETE", f"/api/cart/nobody/items/{LAPTOP}")
    assert status == 404


async def test_clear_cart_ends_actor(shop_client: ShopClient) -> None:
    """DELETE of the cart answers 204 and the cart actor has ended."""
    await shop_client.add("alice", LAPTOP)
    status, _, _ = await shop_client.request("DELETE", "/api/cart/alice")
    assert status == 204
    assert "cart:alice" not in live_cart_names(shop_client.shop)
    assert shop_client.shop.statistics().actors.live == 0
    status, _, _ = await shop_client.request("DELETE", "/api/cart/alice")
    assert status == 204


async def test_healthz(shop_client: ShopClient) -> None:
    """GET /healthz is 200 ok while the services run."""
    status, body, _ = await shop_client.request("GET", "/healthz")
    assert (status, body) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "Invalid JSON body"),
        (b"", "Invalid JSON body"),
        (b"[1, 2]", "Request body must be a JSON object"),
        (b'"LAPTOP-001"', "Request body must be a JSON object"),
        (b"{}", "Missing required field: sku"),
        (b'{"sku": 5}', "Field 'sku' must be a non-empty string"),
        (b'{"sku": ""}', "Field 'sku' must be a non-empty string"),
        (b'{"sku": null}', "Missing required field: sku"),
        (b'{"sku": "LAPTOP-001", "quantity": 0}', "Field 'quantity' must be an integer"),
        (b'{"sku": "LAPTOP-001", "quantity": -1}', "Field 'quantity' must be an integer"),
        (b'{"sku": "LAPTOP-001", "quantity": 1.5}', "Field 'quantity' must be an integer"),
        (b'{"sku": "LAPTOP-001", "quantity": 1.0}', "Field 'quantity' must be an integer"),
        (b'{"sku": "LAPTOP-001", "quantity": "2"}', "Field 'quantity' must be an integer"),
        (b'{"sku": "LAPTOP-001", "quantity": true}', "Field 'quantity' must be an integer"),
        (b'{"sku": "LAPTOP-001", "quantity": 1001}', "Field 'quantity' must be an integer"),
        (b'{"sku": "LAPTOP-001", "quantity": null}', "Field 'quantity' must be an integer"),
        (b"[" * 100_00, "Invalid JSON body"),
    ],
)
async def test_bad_add_bodies_are_400_and_change_nothing(
    shop_client: ShopClient, payload: bytes, message: str
) -> None:
    """Each malformed add body is a 400 naming the problem, and no cart is created."""
    status, body, _ = await shop_client.request(
        "POST", "/api/cart/alice/items", data=payload,
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    assert body["error"].startswith(message)
    assert shop_client.shop.statistics().actors.live == 0


async def test_unknown_sku_is_404(shop_client: ShopClient) -> None:
    """Adding an unknown SKU is a 404 'Product not found: SKU' and creates no cart."""
    status, body, _ = await shop_client.add("alice", "NOPE-1")
    assert (status, body) == (404, {"error": "Product not found: NOPE-1"})
    assert shop_client.shop.statistics().actors.live == 0


@pytest.mark.parametrize(
    "user_id", ["a" * 65, "al%20ice", "bob%21", "%C3%A9mile", "x%2Fy", "semi%3Bcolon"]
)
async def test_bad_user_ids_are_400(shop_client: ShopClient, user_id: str) -> None:
    """A user id outside 1-64 of [A-Za-z0-9_.@-] is a 400 on every cart route."""
    for method, path in [
        ("POST", f"/api/cart/{user_id}/items"),
        ("GET", f"/api/cart/{user_id}"),
        ("POST", f"/api/cart/{user_id}/checkout"),
        ("DELETE", f"/api/cart/{user_id}"),
        ("DELETE", f"/api/cart/{user_id}/items/{LAPTOP}"),
    ]:
        status, body, _ = await shop_client.request(method, path, json={"sku": LAPTOP})
        assert status in (400, 404), (method, path)
        assert "error" in body
    assert shop_client.shop.statistics().actors.live == 0


async def test_good_user_id_characters(shop_client: ShopClient) -> None:
    """Letters, digits and _ . @ - are accepted, up to 64 characters."""
    user = "a.b_c-d@example.com" + "x" * 45
    assert len(user) == 64
    status, _, _ = await shop_client.add(user, LAPTOP)
    assert status == 200


async def test_oversized_body_is_413(shop_client: ShopClient) -> None:
    """A body over 64 KiB is a 413 and changes nothing."""
    payload = b'{"sku": "' + b"A" * (64 * 1024) + b'"}'
    status, body, _ = await shop_client.request("POST", "/api/cart/alice/items", data=payload)
    assert status == 413
    assert "too large" in body["error"]
    assert shop_client.shop.statistics().actors.live == 0


async def test_unknown_route_and_method_are_json(shop_client: ShopClient) -> None:
    """Unknown paths are a JSON 404, wrong methods a JSON 405."""
    status, body, _ = await shop_client.request("GET", "/api/nothing")
    assert (status, body) == (404, {"error": "Not found"})
    status, body, headers = await shop_client.request("PUT", "/api/products")
    assert status == 405
    assert "GET" in headers["Allow"]
    assert body == {"error": "Method not allowed"}
    status, body, _ = await shop_client.request("GET", "/api//products")
    assert (status, body) == (404, {"error": "Not found"})  # no HTML redirect


async def test_concurrent_first_adds_make_one_cart(shop_client: ShopClient) -> None:
    """50 simultaneous first adds for one new user: one cart, every quantity present."""
    statuses: list[int] = []

    async def add_one() -> None:
        status, _, _ = await shop_client.add("newbie", MOUSE, 1)
        statuses.append(status)

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(add_one)
    assert statuses == [200] * 50
    assert shop_client.shop.statistics().actors.spawned == 1
    _, body, _ = await shop_client.request("GET", "/api/cart/newbie")
    assert body["items"][0]["quantity"] == 50
    assert body["total"] == 3999.5


async def test_two_hundred_users_in_parallel(shop_client: ShopClient) -> None:
    """200 users adding at once each get their own cart with exactly their own items."""

    async def shopper(n: int) -> None:
        await shop_client.add(f"user{n}", LAPTOP, 1 + n % 3)
        await shop_client.add(f"user{n}", MOUSE, 1)

    async with trio.open_nursery() as nursery:
        for n in range(200):
            nursery.start_soon(shopper, n)
    assert shop_client.shop.statistics().actors.live == 200
    for n in (0, 1, 2, 199):
        _, body, _ = await shop_client.request("GET", f"/api/cart/user{n}")
        assert [(i["sku"], i["quantity"]) for i in body["items"]] == [
            (LAPTOP, 1 + n % 3), (MOUSE, 1)
        ]


async def test_readiness_apart_from_health(registry: Registry) -> None:
    """/readyz answers 200 while the store answers, and every answer names its node."""
    async with open_shop_client(registry, Settings(node_id="n7")) as client:
        status, body, headers = await client.request("GET", "/readyz")
        assert (status, body) == (200, {"status": "ready"})
        assert headers["X-Served-By"] == "n7"
        assert (await client.request("GET", "/api/nothing"))[2]["X-Served-By"] == "n7"
