"""End to end: ``kill -9`` the real server and check that nothing acknowledged is lost."""

from __future__ import annotations

import re
import signal
from collections import Counter
from pathlib import Path

import httpx

from tests.helpers import REGISTRY_DIR, registry_with
from trioshop import events
from trioshop.logs import event_field, event_pattern
from trioshop.testing.server import ServerProcess, running_server

ROOT = Path(__file__).parents[2]


def serve(registry: Path, data_dir: Path, **env: str) -> ServerProcess:
    server = ServerProcess("--registry", str(registry), "--data-dir", str(data_dir), cwd=str(ROOT))
    server.env.update(env)
    server.start()
    return server


def wait_handled(server: ServerProcess, service: str, order_ids: list[str]) -> None:
    for order_id in order_ids:
        server.wait_for_line(
            event_pattern(events.ORDER_HANDLED, rf" service={service} order_id={order_id}")
        )


def test_acknowledged_adds_survive_kill_9(tmp_path: Path) -> None:
    """Every add answered 200 before SIGKILL is in the cart after a restart."""
    data = tmp_path / "data"
    server = serve(REGISTRY_DIR, data)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            for n in range(20):
                sku = ["LAPTOP-001", "KB-002", "MOUSE-003"][n % 3]
                response = http.post(f"/api/cart/user{n % 4}/items", json={"sku": sku})
                assert response.status_code == 200
    finally:
        server.kill()
    with running_server("--registry", str(REGISTRY_DIR), "--data-dir", str(data)) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            carts = {u: http.get(f"/api/cart/user{u}").json() for u in range(4)}
        server.terminate()
    quantities = Counter()
    for cart in carts.values():
        assert "message" not in cart
        for item in cart["items"]:
            quantities[item["sku"]] += item["quantity"]
    assert quantities == {"LAPTOP-001": 7, "KB-002": 7, "MOUSE-003": 6}


def test_orders_survive_kill_9_and_are_delivered_once(tmp_path: Path) -> None:
    """Orders answered 200 before SIGKILL are stored; after restart each is handled once."""
    data = tmp_path / "data"
    stalled = registry_with(
        tmp_path / "stalled",
        {"trioshop.shop.delivery:run": "tests.fakes.services:stalled",
         "trioshop.shop.notifier:run": "tests.fakes.services:stalled"},
    )
    server = serve(stalled, data)
    order_ids = []
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            for n in range(8):
                http.post(f"/api/cart/buyer{n}/items", json={"sku": "KB-002", "quantity": 2})
                response = http.post(f"/api/cart/buyer{n}/checkout")
                assert response.status_code == 200
                order_ids.append(response.json()["order"]["order_id"])
    finally:
        server.kill()
    with running_server("--registry", str(REGISTRY_DIR), "--data-dir", str(data)) as server:
        wait_handled(server, "delivery", order_ids)
        wait_handled(server, "notifier", order_ids)
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            for n, order_id in enumerate(order_ids):
                order = http.get(f"/api/orders/{order_id}").json()["order"]
                assert order["user_id"] == f"buyer{n}"
                assert order["services"]["delivery"]["status"] == "dispatched"
                assert order["services"]["notifier"]["status"] == "sent"
            stock = {p["sku"]: p["stock"] for p in http.get("/api/products").json()["products"]}
            assert stock["KB-002"] == 200 - 16
        assert server.terminate() == 0
        output = server.output()
    for order_id in order_ids:
        dispatched = re.findall(rf"package dispatched for user \S+ order_id={order_id}", output)
        emailed = re.findall(rf"EMAIL sent to \S+ order_id={order_id}", output)
        assert (len(dispatched), len(emailed)) == (1, 1), order_id


def test_crashing_service_still_processes_every_order_once(tmp_path: Path) -> None:
    """A delivery service that crashes on its first 3 deliveries ends up delivering all once."""
    crashing = registry_with(
        tmp_path,
        {"trioshop.shop.delivery:run": "tests.fakes.services:crashing_delivery",
         "initial_delay: 1s": "initial_delay: 50ms"},
    )
    server = serve(crashing, tmp_path / "data", TRIOSHOP_FAKE_CRASHES="3")
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            order_ids = []
            for n in range(5):
                http.post(f"/api/cart/c{n}/items", json={"sku": "MON-004"})
                order_ids.append(http.post(f"/api/cart/c{n}/checkout").json()["order"]["order_id"])
        wait_handled(server, "delivery", order_ids)
        assert server.terminate() == 0
    finally:
        server.stop_if_running()
    output = server.output()
    assert output.count(f"{event_field(events.SERVICE_CRASHED)} service=delivery") == 3
    for order_id in order_ids:
        assert len(re.findall(rf"package dispatched for user \S+ order_id={order_id}", output)) == 1


def test_sigterm_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Adds racing a SIGTERM: every add answered 200 is in the cart after a restart."""
    data = tmp_path / "data"
    server = serve(REGISTRY_DIR, data)
    acknowledged = 0
    assert server.process is not None
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        for n in range(400):
            if n == 50:
                server.process.send_signal(signal.SIGTERM)  # requests keep coming meanwhile
            try:
                response = http.post("/api/cart/racer/items", json={"sku": "MOUSE-003"})
            except httpx.TransportError:
                break  # the listener has closed: nothing more can be acknowledged
            if response.status_code == 200:
                acknowledged += 1
    assert server.process.wait(timeout=30) == 0
    assert acknowledged >= 50
    with running_server("--registry", str(REGISTRY_DIR), "--data-dir", str(data)) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            cart = http.get("/api/cart/racer").json()
        server.terminate()
    assert cart["items"][0]["quantity"] == acknowledged
