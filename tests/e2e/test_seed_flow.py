"""End to end: the seed's manual flow against a real ``trioshop run`` over HTTP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import REGISTRY_DIR
from trioshop import events
from trioshop.logs import event_field, event_pattern
from trioshop.testing.server import running_server


def test_seed_flow_over_real_http(tmp_path: Path) -> None:
    """Browse, Alice and Bob shop and check out; services log both orders; SIGTERM exits 0."""
    server_args = ("--registry", str(REGISTRY_DIR), "--data-dir", str(tmp_path))
    with running_server(*server_args) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            orders = seed_flow(http)
        for order in orders:
            user, order_id = order["user_id"], order["order_id"]
            server.wait_for_line(re.compile(rf"DELIVERY package dispatched for user {user}\""))
            server.wait_for_line(re.compile(rf"EMAIL sent to {user}\".*order_id={order_id}"))
            server.wait_for_line(re.compile(rf"DELIVERY scheduling\" user_id={user}"))
        assert server.terminate() == 0
    output = server.output()
    assert "Traceback" not in output
    assert f"{event_field(events.CART_CREATED)} user_id=alice" in output
    assert re.search(
        event_pattern(
            events.REQUEST, r" request_id=\w+ method=POST path=/api/cart/bob/checkout status=200"
        ), output
    )


def seed_flow(http: httpx.Client) -> list[dict[str, Any]]:
    """The seed's test.http flow; returns Alice's and Bob's orders."""
    products = http.get("/api/products").json()["products"]
    assert [p["sku"] for p in products] == [
        "LAPTOP-001", "KB-002", "MOUSE-003", "MON-004", "HP-005"
    ]

    for sku, quantity in [("LAPTOP-001", 1), ("KB-002", 2), ("HP-005", 1)]:
        response = http.post("/api/cart/alice/items", json={"sku": sku, "quantity": quantity})
        assert response.status_code == 200, response.text
    cart = http.get("/api/cart/alice").json()
    assert cart["total"] == 2099.96
    assert len(cart["items"]) == 3
    alice = http.post("/api/cart/alice/checkout")
    assert alice.status_code == 200
    alice_order = alice.json()["order"]
    assert alice_order["total"] == 2099.96
    assert http.get("/api/cart/alice").json()["message"] == "Cart is empty (no active session)"

    for sku, quantity in [("MOUSE-003", 3), ("MON-004", 1)]:
        assert http.post(
            "/api/cart/bob/items", json={"sku": sku, "quantity": quantity}
        ).status_code == 200
    assert http.get("/api/cart/bob").json()["total"] == 839.96
    bob_order = http.post("/api/cart/bob/checkout").json()["order"]

    bad = http.post(
        "/api/cart/bob/items", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert (bad.status_code, bad.json()) == (400, {"error": "Invalid JSON body"})

    return [alice_order, bob_order]
