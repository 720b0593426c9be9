"""End to end: stock, idempotent checkout, orders and passivation through the real server."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from trioshop import events
from trioshop.logs import event_pattern
from trioshop.testing.server import running_server


def test_stock_idempotency_orders_and_passivation_over_http(
    tmp_path: Path, registry_copy: Path
) -> None:
    """409 past stock, one order per Idempotency-Key, order status, idle cart restored."""
    products = registry_copy / "products.yaml"
    products.write_text(products.read_text().replace("stock: 75", "stock: 2"))  # monitors
    args = (
        "--registry", str(registry_copy), "--data-dir", str(tmp_path / "data"), "--cart-idle", "1"
    )
    with running_server(*args) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            two = http.post("/api/cart/ann/items", json={"sku": "MON-004", "quantity": 2})
            assert two.is_success
            too_many = http.post("/api/cart/ann/items", json={"sku": "MON-004"})
            assert too_many.status_code == 409
            assert too_many.json() == {
                "error": "Insufficient stock for MON-004: requested 3, available 2"
            }

            key = {"Idempotency-Key": "ann-order-1"}
            first = http.post("/api/cart/ann/checkout", headers=key)
            again = http.post("/api/cart/ann/checkout", headers=key)
            assert first.status_code == again.status_code == 200
            order_id = first.json()["order"]["order_id"]
            assert again.json()["order"]["order_id"] == order_id
            other = http.post("/api/cart/bob/items", json={"sku": "KB-002"})
            assert other.is_success
            assert http.post("/api/cart/bob/checkout", headers=key).status_code == 422
            stock = {p["sku"]: p["stock"] for p in http.get("/api/products").json()["products"]}
            assert stock["MON-004"] == 0

            handled = rf"order handled\" service=delivery order_id={order_id}"
            server.wait_for_line(re.compile(handled))
            order = http.get(f"/api/orders/{order_id}").json()["order"]
            assert order["services"]["delivery"]["status"] == "dispatched"
            assert [o["order_id"] for o in http.get("/api/users/ann/orders").json()["orders"]] == [
                order_id
            ]

            # bob's cart goes idle, its actor ends, and the next request brings it back
            server.wait_for_line(event_pattern(events.CART_ENDED, r" user_id=bob \S+ reason=idle"))
            assert http.get("/api/admin/processes").json()["count"] == 0
            cart = http.get("/api/cart/bob").json()
            assert [(i["sku"], i["quantity"]) for i in cart["items"]] == [("KB-002", 1)]
            assert http.get("/api/admin/processes").json()["count"] == 1
        assert server.terminate() == 0


def test_add_retried_with_its_idempotency_key_adds_once(tmp_path: Path) -> None:
    """Over real HTTP, an add repeated with its Idempotency-Key gets the same answer, adds once."""
    with running_server("--data-dir", str(tmp_path / "data")) as server, httpx.Client(
        base_url=server.base_url, timeout=10
    ) as http:
        key = {"Idempotency-Key": "add-7f3a"}
        body = {"sku": "KB-002", "quantity": 2}
        first = http.post("/api/cart/kim/items", json=body, headers=key)
        again = http.post("/api/cart/kim/items", json=body, headers=key)
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert http.get("/api/cart/kim").json()["items"][0]["quantity"] == 2
        bad = http.post("/api/cart/kim/items", json=body, headers={"Idempotency-Key": ""})
        assert bad.status_code == 400
