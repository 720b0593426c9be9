"""Tests of the delivery and notifier services under the supervisor, through the API."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.conftest import open_shop_client
from tests.fakes import services as fake_services
from trioshop.registry import load_registry
from trioshop.runtime import ServiceStatus


async def checkout(client, user: str) -> str:  # type: ignore[no-untyped-def]
    await client.add(user, "LAPTOP-001")
    await client.add(user, "KB-002", 2)
    status, body, _ = await client.request("POST", f"/api/cart/{user}/checkout")
    assert status == 200
    return str(body["order"]["order_id"])


async def test_each_order_reaches_each_service_once(
    registry_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every checkout is delivered and notified exactly once, with the DELIVERY/EMAIL blocks."""
    caplog.set_level(logging.INFO)
    async with open_shop_client(load_registry(registry_copy)) as client:
        orders = [await checkout(client, f"user{n}") for n in range(5)]
        await trio.testing.wait_all_tasks_blocked()
        for name in ("delivery", "notifier"):
            assert client.shop.services[name].processed == 5
            assert client.shop.services[name].handled == set(orders)
    dispatched = [r for r in caplog.records if "package dispatched" in r.getMessage()]
    emails = [r for r in caplog.records if r.getMessage().startswith("EMAIL sent to")]
    packed = [r for r in caplog.records if r.getMessage() == "DELIVERY packing item"]
    assert len(dispatched) == 5
    assert len(emails) == 5
    assert len(packed) == 10


async def test_crashed_service_restarts_and_later_orders_arrive(
    registry_copy: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A crashing delivery service is restarted; later orders arrive; the notifier is unharmed."""
    processes = registry_copy / "processes.yaml"
    processes.write_text(
        processes.read_text().replace(
            "trioshop.shop.delivery:run", "tests.fakes.services:crashing_delivery"
        )
    )
    fake_services.CRASHES_LEFT["delivery"] = 2
    async with open_shop_client(load_registry(registry_copy)) as client:
        first = await checkout(client, "u1")
        await trio.testing.wait_all_tasks_blocked()
        second = await checkout(client, "u2")  # crashes again while it backs off / restarts
        await trio.sleep(10)  # virtual: past the 1 s and 2 s backoffs
        third = await checkout(client, "u3")
        await trio.testing.wait_all_tasks_blocked()
        delivery = client.shop.supervisor.states["delivery"]
        assert delivery.status is ServiceStatus.RUNNING
        assert delivery.failures == 2
        assert delivery.restarts == 2
        assert third in client.shop.services["delivery"].handled
        assert client.shop.services["notifier"].handled == {first, second, third}
        status, _, _ = await client.request("GET", "/healthz")
        assert status == 200


async def test_health_is_503_when_a_service_gave_up(
    registry_copy: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """When the supervisor gives up on a service, /healthz answers 503 naming it."""
    processes = registry_copy / "processes.yaml"
    processes.write_text(
        processes.read_text()
        .replace("trioshop.shop.delivery:run", "tests.fakes.services:crashing_delivery")
        .replace("max_attempts: 10", "max_attempts: 2", 1)
    )
    fake_services.CRASHES_LEFT["delivery"] = 100
    async with open_shop_client(load_registry(registry_copy)) as client:
        for n in range(3):
            await checkout(client, f"u{n}")
            await trio.sleep(5)
        status, body, _ = await client.request("GET", "/healthz")
        assert status == 503
        assert body == {"error": "Service(s) gave up: delivery"}
        # carts still work while a service is down
        assert (await client.add("u9", "MOUSE-003"))[0] == 200
