"""Tests of the delivery and notifier services: outbox delivery under the supervisor."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.fakes import services as fake_services
from tests.helpers import ShopClient, open_shop_client, service
from trioshop.registry import load_registry
from trioshop.runtime import ServiceStatus


async def checkout(client: ShopClient, user: str) -> str:
    await client.add(user, "LAPTOP-001")
    await client.add(user, "KB-002", 2)
    status, body, _ = await client.request("POST", f"/api/cart/{user}/checkout")
    assert status == 200
    return str(body["order"]["order_id"])


def dispatched_per_order(caplog: pytest.LogCaptureFixture) -> Counter[str]:
    return Counter(
        r.__dict__["fields"]["order_id"]
        for r in caplog.records
        if "package dispatched" in r.getMessage()
    )


def use_crashing_delivery(registry_dir: Path, crashes: int, max_attempts: int = 10) -> None:
    processes = registry_dir / "processes.yaml"
    processes.write_text(
        processes.read_text()
        .replace("trioshop.shop.delivery:run", "tests.fakes.services:crashing_delivery")
        .replace("max_attempts: 10", f"max_attempts: {max_attempts}", 1)
    )
    fake_services.CRASHES_LEFT["delivery"] = crashes


async def test_each_order_reaches_each_service_once(
    registry_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every checkout is delivered and notified exactly once, and its status recorded."""
    caplog.set_level(logging.INFO)
    async with open_shop_client(load_registry(registry_copy)) as client:
        orders = [await checkout(client, f"user{n}") for n in range(5)]
        await trio.testing.wait_all_tasks_blocked()
        for name in ("delivery", "notifier"):
            assert service(client.shop, name).processed == 5
        for order_id in orders:
            _, body, _ = await client.request("GET", f"/api/orders/{order_id}")
            services = body["order"]["services"]
            assert services["delivery"]["status"] == "dispatched"
            assert services["notifier"]["status"] == "sent"
    assert dispatched_per_order(caplog) == dict.fromkeys(orders, 1)
    emails = [r for r in caplog.records if r.getMessage().startswith("EMAIL sent to")]
    packed = [r for r in caplog.records if r.getMessage() == "DELIVERY packing item"]
    assert len(emails) == 5
    assert len(packed) == 10


async def test_crashed_service_gets_every_order_once(
    registry_copy: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A delivery service crashing on its first two orders is restarted and delivers all, once."""
    caplog.set_level(logging.INFO)
    use_crashing_delivery(registry_copy, crashes=2)
    async with open_shop_client(load_registry(registry_copy)) as client:
        first = await checkout(client, "u1")
        await trio.testing.wait_all_tasks_blocked()
        second = await checkout(client, "u2")  # published while delivery backs off
        await trio.sleep(10)  # virtual time: past the 1 s and 2 s backoffs
        third = await checkout(client, "u3")
        await trio.testing.wait_all_tasks_blocked()
        delivery = service(client.shop, "delivery").state
        assert delivery.status is ServiceStatus.RUNNING
        assert (delivery.failures, delivery.restarts) == (2, 2)
        assert service(client.shop, "notifier").processed == 3
        status, _, _ = await client.request("GET", "/healthz")
        assert status == 200
    assert dispatched_per_order(caplog) == {first: 1, second: 1, third: 1}


async def test_health_is_503_when_a_service_gave_up(
    registry_copy: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A service given up on: /healthz 503 naming it, /readyz still 200, carts still work."""
    use_crashing_delivery(registry_copy, crashes=100, max_attempts=2)
    async with open_shop_client(load_registry(registry_copy)) as client:
        for n in range(3):
            await checkout(client, f"u{n}")
            await trio.sleep(5)
        status, body, _ = await client.request("GET", "/healthz")
        assert status == 503
        assert body == {"error": "Service(s) gave up: delivery"}
        # ...while the node stays ready: a proxy must not eject every node for a shared fault
        assert (await client.request("GET", "/readyz"))[:2] == (200, {"status": "ready"})
        # carts still work while a service is down
        assert (await client.add("u9", "MOUSE-003"))[0] == 200
