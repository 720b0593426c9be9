"""Tests of the delivery and notifier services: outbox delivery under the supervisor."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from tests.fakes import services as fake_services
from tests.helpers import ShopClient, open_shop_client, service
from trioshop.config import Settings
from trioshop.domain import Order
from trioshop.events import CLAIM_RUNNING_OUT
from trioshop.registry import load_registry
from trioshop.runtime import EventBus, ServiceStatus
from trioshop.shop.services import ServiceContext, consume_orders
from trioshop.store import OutboxEntry
from trioshop.store.memory import MemoryStore


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


@attrs.define
class ClaimingStore(MemoryStore):
    """A memory store whose batches are claimed for 10 s, like PostgreSQL's (the memory
    store hands the unacknowledged entries out again at each look); each ack takes *ack_for*
    seconds; the times of the looks are kept, and the second look sets *looked_again* and
    never ends (the service is held there for the test to look)."""

    outbox_claim_seconds = 10.0
    ack_for: float = 0.0
    looks: list[float] = attrs.field(factory=list)
    looked_again: trio.Event = attrs.field(factory=trio.Event)

    async def pending(self, service: str, limit: int = 100) -> list[OutboxEntry]:
        self.looks.append(trio.current_time())
        if len(self.looks) == 2:
            self.looked_again.set()
            await trio.sleep_forever()
        return await super().pending(service, limit)

    async def ack(self, service: str, entry: OutboxEntry, status: str) -> None:
        await trio.sleep(self.ack_for)
        await super().ack(service, entry, status)


@attrs.define
class TimedHandler:
    """Takes *takes* seconds per order (for ever for *stuck*); records when each order
    started and when it ended or was cancelled."""

    takes: float = 1.0
    stuck: str | None = None
    runs: list[tuple[str, float, float]] = attrs.field(factory=list)

    async def __call__(self, ctx: ServiceContext, order: Order) -> str:
        started = trio.current_time()
        try:
            if order.order_id == self.stuck:
                await trio.sleep_forever()
            await trio.sleep(self.takes)
        finally:
            self.runs.append((order.order_id, started, trio.current_time()))
        return "done"


async def handle_until_second_look(
    store: ClaimingStore, handler: TimedHandler, orders: list[str]
) -> None:
    """Queue *orders* (one user each) for service ``s`` on *store* and run the outbox loop
    with *handler* until it looks at the outbox a second time (within 60 s, virtual)."""
    await store.register_service("s")
    for n, order_id in enumerate(orders):
        await store.checkout(Order(order_id, f"u{n}", (), 0, 0), version=0)
    events = EventBus().subscribe("s", "order", name="s")
    ctx = ServiceContext("s", store, events, Settings())
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(consume_orders, ctx, handler)
            await store.looked_again.wait()
            nursery.cancel_scope.cancel()


async def test_a_handler_past_the_claim_is_cancelled_before_it_ends_and_not_acked(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A stuck order is cancelled before its 10 s claim ends, not acked, the rest of its
    batch not started, logged once; the outbox is looked at again at once."""
    caplog.set_level(logging.INFO)
    store, handler = ClaimingStore(), TimedHandler(stuck="a")
    await handle_until_second_look(store, handler, ["a", "b"])
    (order, started, ended), = handler.runs
    assert order == "a"
    assert started >= store.looks[0]
    assert ended <= store.looks[0] + store.outbox_claim_seconds - 2.0  # room left for the ack
    assert [entry.order.order_id for entry in await store.pending("s")] == ["a", "b"]
    assert [r.__dict__["fields"]["order_id"] for r in caplog.records
            if r.msg == CLAIM_RUNNING_OUT] == ["a"]


async def test_no_order_of_a_batch_is_started_past_the_claims_safe_point(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Orders taking 3 s acked in 1 s each: those the 10 s claim leaves time for are
    handled and acked; the rest are not started, and wait for the next look."""
    store, handler = ClaimingStore(ack_for=1.0), TimedHandler(takes=3.0)
    await handle_until_second_look(store, handler, ["a", "b", "c", "d"])
    first_claim_end = store.looks[0] + store.outbox_claim_seconds
    assert [run[0] for run in handler.runs] == ["a", "b"]  # b's ack ends at 8 s: past 7.5 s
    assert all(ended + 1.0 <= first_claim_end for _, _, ended in handler.runs)
    assert store.looks[1] < first_claim_end
    assert [entry.order.order_id for entry in await store.pending("s")] == ["c", "d"]
