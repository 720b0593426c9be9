"""API tests of operating the server: metrics, request ids, admin view and auth, reloads."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import trio.testing

from tests.helpers import ShopClient, open_shop_client, service
from trioshop.config import Settings
from trioshop.http.openapi import openapi_document
from trioshop.registry import Registry, load_registry


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text output (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(\{{{re.escape(wanted)}\}})? (\S+)$" if labels else (
        rf"^{re.escape(name)} (\S+)$"
    )
    for line in text.splitlines():
        match = re.match(pattern, line)
        if match:
            return float(match.groups()[-1])
    return 0.0


async def scrape(client: ShopClient) -> str:
    response = await client.client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return (await response.get_data()).decode()


async def test_request_labels_come_from_fixed_sets(shop_client: ShopClient) -> None:
    """Client-chosen methods and paths never become label values: the series stay bounded."""
    for n in range(200):
        await shop_client.request(f"M{n}X", f"/random/{n}")
    text = await scrape(shop_client)
    methods = set(re.findall(r'trioshop_http_requests_total\{[^}]*method="([^"]+)"', text))
    routes = set(re.findall(r'trioshop_http_requests_total\{[^}]*route="([^"]+)"', text))
    assert methods <= {"GET", "other"}
    assert "other" in methods
    assert routes == {"unmatched"}
    assert len(text) < 20_000


async def test_metrics_follow_a_scripted_flow(shop_client: ShopClient) -> None:
    """Requests, actors, checkouts, bus and service series move as the flow dictates."""
    before = await scrape(shop_client)
    assert metric(before, "trioshop_actors_live") == 0
    await shop_client.add("alice", "LAPTOP-001")
    await shop_client.add("alice", "KB-002", 2)
    await shop_client.add("bob", "MOUSE-003")
    during = await scrape(shop_client)
    assert metric(during, "trioshop_actors_live") == 2
    assert metric(during, "trioshop_actors_spawned_total") == 2
    await shop_client.request("POST", "/api/cart/alice/checkout")
    await shop_client.request("GET", "/api/cart/nobody")
    await trio.testing.wait_all_tasks_blocked()
    after = await scrape(shop_client)
    assert metric(after, "trioshop_actors_live") == 1
    assert metric(after, "trioshop_actors_ended_total") == 1
    assert metric(after, "trioshop_checkouts_total") == 1
    assert metric(after, "trioshop_order_value_total") == pytest.approx(1799.97)
    assert metric(after, "trioshop_bus_events_published_total") == 1
    assert metric(after, "trioshop_bus_events_delivered_total", subscriber="delivery") == 1
    assert metric(after, "trioshop_service_orders_processed_total", service="notifier") == 1
    assert metric(after, "trioshop_service_state", service="delivery", state="running") == 1
    added = metric(
        after, "trioshop_http_requests_total",
        route="/api/cart/<user_id>/items", method="POST", status="200",
    )
    assert added == 3
    assert metric(
        after, "trioshop_http_request_duration_seconds_count",
        route="/api/cart/<user_id>", method="GET",
    ) == 1


async def test_request_id_is_echoed_or_generated(
    shop_client: ShopClient, caplog: pytest.LogCaptureFixture
) -> None:
    """X-Request-ID is echoed (or generated) and tags the access log, never actor logs."""
    caplog.set_level(logging.INFO)
    _, _, headers = await shop_client.request(
        "POST", "/api/cart/alice/items", json={"sku": "KB-002"},
        headers={"X-Request-ID": "abc-123"},
    )
    assert headers["X-Request-ID"] == "abc-123"
    _, _, generated = await shop_client.request("GET", "/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", generated["X-Request-ID"])
    _, _, replaced = await shop_client.request(
        "GET", "/healthz", headers={"X-Request-ID": "bad id with spaces"}
    )
    assert replaced["X-Request-ID"] != "bad id with spaces"
    from trioshop.logs import KeyValueFormatter

    formatter = KeyValueFormatter()
    access = [r for r in caplog.records if r.name == "trioshop.access"]
    cart = [r for r in caplog.records if r.name == "trioshop.cart"]
    assert "request_id=abc-123" in formatter.format(access[0])
    assert cart and all("request_id" not in formatter.format(r) for r in cart)


async def test_admin_processes_lists_carts(shop_client: ShopClient) -> None:
    """The live view lists a cart after an add and not after its checkout."""
    await shop_client.add("alice", "KB-002")
    status, body, _ = await shop_client.request("GET", "/api/admin/processes")
    assert status == 200
    assert body["count"] == 1
    assert body["actors"][0]["name"] == "cart:alice"
    assert body["actors"][0]["mailbox_depth"] == 0
    assert set(body["services"]) == {"delivery", "notifier"}
    assert body["services"]["delivery"]["state"] == "running"
    await shop_client.request("POST", "/api/cart/alice/checkout")
    _, body, _ = await shop_client.request("GET", "/api/admin/processes")
    assert (body["count"], body["actors"]) == (0, [])


async def test_admin_registry_view(shop_client: ShopClient) -> None:
    """The registry view lists the loaded entries with their version."""
    status, body, _ = await shop_client.request("GET", "/api/admin/registry")
    assert status == 200
    ids = [e["id"] for e in body["entries"]]
    assert "app:product.laptop" in ids
    laptop = body["entries"][ids.index("app:product.laptop")]
    assert (laptop["kind"], laptop["sku"], laptop["price_cents"]) == (
        "registry.entry", "LAPTOP-001", 149999
    )
    assert len(body["version"]) == 16


async def test_admin_without_token_is_loopback_only(shop_client: ShopClient) -> None:
    """With no token configured, loopback clients get in and others get 403."""
    assert (await shop_client.request("GET", "/api/admin/registry", client="::1"))[0] == 200
    status, body, _ = await shop_client.request("GET", "/api/admin/registry", client="10.0.0.7")
    assert status == 403
    assert "--admin-token" in body["error"]


async def test_admin_with_token(registry: Registry) -> None:
    """With a token, only 'Authorization: Bearer <token>' gets in, from anywhere."""
    async with open_shop_client(registry, Settings(admin_token="s3cret")) as client:
        path = "/api/admin/processes"
        status, _, headers = await client.request("GET", path)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer nope"}
        assert (await client.request("GET", path, headers=wrong))[0] == 401
        basic = {"Authorization": "Basic s3cret"}
        assert (await client.request("GET", path, headers=basic))[0] == 401
        right = {"Authorization": "Bearer s3cret"}
        assert (await client.request("GET", path, headers=right, client="203.0.113.9"))[0] == 200
        # the public API needs no token
        assert (await client.request("GET", "/api/products", client="203.0.113.9"))[0] == 200


async def test_reload_applies_price_change_and_new_product(registry_copy: Path) -> None:
    """A valid reload shows new prices and products at once; carts keep their add-time price."""
    async with open_shop_client(load_registry(registry_copy)) as client:
        await client.add("alice", "KB-002")
        products = registry_copy / "products.yaml"
        products.write_text(
            products.read_text().replace("price: 149.99", "price: 99.50")
            + "\n  - name: product.webcam\n    kind: registry.entry\n"
            "    meta: {type: product, title: HD Webcam}\n"
            "    sku: CAM-006\n    price: 59.90\n    stock: 12\n"
        )
        status, report, _ = await client.request("POST", "/api/admin/registry/reload")
        assert status == 200
        assert report["products"] == 6
        assert report["services_restarted"] == []
        _, body, _ = await client.request("GET", "/api/products")
        by_sku = {p["sku"]: p for p in body["products"]}
        assert by_sku["KB-002"]["price"] == 99.5
        assert by_sku["CAM-006"] == {
            "id": "app:product.webcam", "title": "HD Webcam", "sku": "CAM-006",
            "price": 59.9, "stock": 12,
        }
        await client.add("alice", "CAM-006")
        await client.add("bob", "KB-002")
        _, alice, _ = await client.request("GET", "/api/cart/alice")
        assert [i["price"] for i in alice["items"]] == [149.99, 59.9]
        _, bob, _ = await client.request("GET", "/api/cart/bob")
        assert bob["items"][0]["price"] == 99.5


async def test_invalid_reload_is_refused_and_old_registry_serves(registry_copy: Path) -> None:
    """A broken registry is refused with the validation message; nothing changes."""
    async with open_shop_client(load_registry(registry_copy)) as client:
        products = registry_copy / "products.yaml"
        products.write_text(products.read_text().replace("price: 79.99", "price: cheap"))
        status, body, _ = await client.request("POST", "/api/admin/registry/reload")
        assert status == 422
        assert "products.yaml" in body["error"]
        assert "app:product.mouse" in body["error"]
        assert "price" in body["error"]
        _, products_body, _ = await client.request("GET", "/api/products")
        assert products_body["products"][2]["price"] == 79.99
        assert (await client.add("alice", "MOUSE-003"))[0] == 200


async def test_reload_restarts_only_changed_services(registry_copy: Path) -> None:
    """Changing one service's entry restarts that service only."""
    async with open_shop_client(load_registry(registry_copy)) as client:
        await client.add("alice", "KB-002")
        await client.request("POST", "/api/cart/alice/checkout")
        await trio.testing.wait_all_tasks_blocked()
        processes = registry_copy / "processes.yaml"
        text = processes.read_text()
        head, _, tail = text.partition("  - name: notifier")
        processes.write_text(head + "  - name: notifier" + tail.replace(
            "max_attempts: 10", "max_attempts: 5"
        ))
        status, report, _ = await client.request("POST", "/api/admin/registry/reload")
        assert status == 200
        assert report["services_restarted"] == ["notifier"]
        # A restarted service counts afresh; one left running keeps its count.
        assert service(client.shop, "notifier").processed == 0
        assert service(client.shop, "delivery").processed == 1
        await client.add("bob", "KB-002")
        await client.request("POST", "/api/cart/bob/checkout")
        await trio.testing.wait_all_tasks_blocked()
        assert service(client.shop, "notifier").processed == 1
        assert service(client.shop, "delivery").processed == 2


async def test_reload_of_a_service_that_is_off_restarts_nothing(registry_copy: Path) -> None:
    """Editing the relay's entry on a node without --events-redis reports no restart."""
    async with open_shop_client(load_registry(registry_copy)) as client:
        processes = registry_copy / "processes.yaml"
        head, _, tail = processes.read_text().partition("  - name: relay")
        relay, _, rest = tail.partition("  - name:")
        processes.write_text(head + "  - name: relay" + relay.replace(
            "max_attempts: 10", "max_attempts: 5"
        ) + "  - name:" + rest)
        status, report, _ = await client.request("POST", "/api/admin/registry/reload")
        assert status == 200
        assert report["services_restarted"] == []
        assert report["services_started"] == []


def test_openapi_documents_every_route(registry: Registry) -> None:
    """Every route of the app is in the OpenAPI document with its methods, and nothing else."""
    from trioshop.http import create_app

    app = create_app(registry)
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith(("pages.", "live.")):
            continue  # the HTML pages and their event stream are not the JSON API
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    document = openapi_document(registry.router.prefix, Settings().max_body_bytes)
    documented = {path: set(ops) for path, ops in document["paths"].items()}
    assert routes == documented


async def test_service_restarted_by_a_request_does_not_carry_its_id(
    registry_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A service restarted by an admin reload logs without that request's id, ever after."""
    caplog.set_level(logging.INFO)
    async with open_shop_client(load_registry(registry_copy)) as client:
        processes = registry_copy / "processes.yaml"
        head, _, tail = processes.read_text().partition("  - name: notifier")
        processes.write_text(
            head + "  - name: notifier" + tail.replace("max_attempts: 10", "max_attempts: 5")
        )
        status, report, _ = await client.request(
            "POST", "/api/admin/registry/reload", headers={"X-Request-ID": "reload-1"}
        )
        assert (status, report["services_restarted"]) == (200, ["notifier"])
        await client.add("alice", "KB-002")
        await client.request("POST", "/api/cart/alice/checkout")
        await trio.testing.wait_all_tasks_blocked()
    emails = [r for r in caplog.records if r.getMessage().startswith("EMAIL")]
    assert emails
    assert all("request_id" not in r.__dict__["fields"] for r in emails)
