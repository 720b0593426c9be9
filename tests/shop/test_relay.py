"""Tests of the orders relay against a real Redis: the entry, the ack after XADD, outages."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.helpers import ShopClient, open_shop_client, service
from tests.redis import fresh_stream, private_redis
from trioshop import events
from trioshop.config import Settings
from trioshop.registry import load_registry
from trioshop.shop import relay
from trioshop.store import open_store
from trioshop.testing.redis import RedisServer, stream_entries

RELAY = "relay"
PENDING = "pending"  # what an order's services list shows before the ack


class LogWaiter(logging.Handler):
    """Counts the records of one event (and service) and wakes whoever waits for a count.

    Records are emitted on the Trio thread, so a waiter's event can be set in ``emit``.
    """

    def __init__(self, event: str, service: str | None = None) -> None:
        super().__init__()
        self.event, self.service = event, service
        self.count = 0
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        fields = record.__dict__.get("fields", {})
        if record.msg == self.event and self.service in (None, fields.get("service")):
            self.count += 1
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, count: int) -> None:
        """Until *count* records were seen (a test's timeout bounds it)."""
        while self.count < count:
            await self._changed.wait()


@contextmanager
def watching(event: str, service: str | None = None) -> Iterator[LogWaiter]:
    waiter = LogWaiter(event, service)
    root = logging.getLogger()
    root.addHandler(waiter)
    previous = root.level
    root.setLevel(logging.INFO)
    try:
        yield waiter
    finally:
        root.removeHandler(waiter)
        root.setLevel(previous)


@pytest.fixture
def shared_stream() -> Iterator[tuple[str, str]]:
    """The shared test Redis and a fresh stream on it (skips outside CI if none answers)."""
    with fresh_stream() as found:
        yield found


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A private redis-server (skips outside CI if it is not installed)."""
    with private_redis() as server:
        yield server


@asynccontextmanager
async def shop_with_relay(
    registry_copy: Path, url: str, stream: str, maxlen: int | None = None
) -> AsyncIterator[ShopClient]:
    settings = Settings(events_redis=url, events_stream=stream,
                        **({} if maxlen is None else {"events_maxlen": maxlen}))
    async with open_shop_client(load_registry(registry_copy), settings) as client:
        yield client


async def checkout(client: ShopClient, user: str) -> str:
    await client.add(user, "LAPTOP-001")
    await client.add(user, "KB-002", 2)
    status, body, _ = await client.request("POST", f"/api/cart/{user}/checkout")
    assert status == 200, body
    return str(body["order"]["order_id"])


async def relay_status(client: ShopClient, order_id: str) -> str:
    """What the outbox recorded for the relay and *order_id* (``pending``: not acked)."""
    _, body, _ = await client.request("GET", f"/api/orders/{order_id}")
    return str(body["order"]["services"][RELAY]["status"])


async def test_an_order_becomes_one_entry_with_the_documented_fields(
    registry_copy: Path, shared_stream: tuple[str, str]
) -> None:
    """A checkout is XADDed once: order id, user id, schema and the order as JSON."""
    url, stream = shared_stream
    with watching(events.ORDER_HANDLED, RELAY) as handled:
        async with shop_with_relay(registry_copy, url, stream) as client:
            order_id = await checkout(client, "alice")
            await handled.wait_for(1)
            assert await relay_status(client, order_id) == relay.PUBLISHED
            _, body, _ = await client.request("GET", f"/api/orders/{order_id}")
        entries = await stream_entries(url, stream)
    order = body["order"]
    assert entries == [{
        "order_id": order_id,
        "user_id": "alice",
        "schema": relay.SCHEMA_VERSION,
        "order": entries[0]["order"],
    }]
    assert json.loads(entries[0]["order"]) == {
        "items": order["items"], "total": order["total"], "timestamp": order["timestamp"],
    }


async def test_without_a_redis_url_the_relay_is_neither_started_nor_registered(
    registry_copy: Path, tmp_path: Path
) -> None:
    """events_redis None: no relay service, and the store queues no orders for it."""
    registry = load_registry(registry_copy)
    async with open_shop_client(registry, Settings(data_dir=str(tmp_path))) as client:
        assert client.shop.services.names == ["delivery", "notifier"]
        await checkout(client, "bob")
    async with open_store(tmp_path, {}, trio.CapacityLimiter(1)) as store:
        assert await store.keep_services(["delivery", "notifier"]) == []


async def test_an_order_is_acknowledged_only_after_redis_answered(
    registry_copy: Path, redis: RedisServer
) -> None:
    """Redis paused: the XADD times out, nothing is acked; resumed: published and acked."""
    with watching(events.RELAY_WAITING) as down, watching(events.ORDER_HANDLED, RELAY) as handled:
        async with shop_with_relay(registry_copy, redis.url, "orders") as client:
            redis.pause()
            order_id = await checkout(client, "carol")  # answered while Redis hangs
            await down.wait_for(1)
            assert await relay_status(client, order_id) == PENDING
            assert service(client.shop, RELAY).processed == 0
            redis.resume()
            await handled.wait_for(1)
            assert await relay_status(client, order_id) == relay.PUBLISHED
        # The XADD that timed out may have been applied too: at least once, one order.
        assert {e["order_id"] for e in await stream_entries(redis.url, "orders")} == {order_id}


async def test_redis_down_backs_off_then_publishes_the_backlog_in_order(
    registry_copy: Path, redis: RedisServer
) -> None:
    """Redis stopped: checkouts succeed, the outage is logged once, nothing is acked; Redis
    back: every order is published once, in outbox order, with no service restart."""
    with watching(events.RELAY_WAITING) as down, watching(events.RELAY_PUBLISHING_AGAIN) as back, \
            watching(events.ORDER_HANDLED, RELAY) as handled:
        async with shop_with_relay(registry_copy, redis.url, "orders") as client:
            redis.stop()
            first = await checkout(client, "dave")
            await down.wait_for(1)
            later = [await checkout(client, user) for user in ("erin", "dave", "erin")]
            await trio.testing.wait_all_tasks_blocked()
            assert service(client.shop, RELAY).processed == 0
            assert [await relay_status(client, o) for o in [first, *later]] == [PENDING] * 4
            redis.start()
            await handled.wait_for(4)
            await back.wait_for(1)
            relay_service = service(client.shop, RELAY).state
            assert relay_service.restarts == 0
        published = await stream_entries(redis.url, "orders")
    assert [e["order_id"] for e in published] == [first, *later]
    assert down.count == 1


async def test_the_stream_is_trimmed_to_about_maxlen(registry_copy: Path) -> None:
    """events_maxlen 2 on a Redis whose stream blocks hold 2 entries: 6 orders, 2-3 kept,
    the newest among them."""
    with private_redis(options=["--stream-node-max-entries", "2"]) as redis, \
            watching(events.ORDER_HANDLED, RELAY) as handled:
        async with shop_with_relay(registry_copy, redis.url, "orders", maxlen=2) as client:
            orders = [await checkout(client, f"user{n}") for n in range(6)]
            await handled.wait_for(6)
        kept = [e["order_id"] for e in await stream_entries(redis.url, "orders")]
    assert 2 <= len(kept) < 6
    assert kept == orders[-len(kept):]


@pytest.mark.parametrize(
    ("reply", "outage"),
    [
        ("LOADING Redis is loading the dataset in memory", True),
        ("BUSY Redis is busy running a script", True),
        ("READONLY You can't write against a read only replica.", True),
        ("OOM command not allowed when used memory > 'maxmemory'.", True),
        ("TRYAGAIN Multiple keys request during rehashing of slot", True),
        ("MASTERDOWN Link with MASTER is down", True),
        ("CLUSTERDOWN The cluster is down", True),
        ("ERR max number of clients reached", True),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", False),
        ("ERR syntax error", False),
        ("NOAUTH Authentication required.", False),
    ],
)
def test_transient_replies_are_an_outage_and_others_are_not(reply: str, outage: bool) -> None:
    """The error replies as the client parses them: the transient ones wait, the rest crash."""
    from coredis.parser import Parser

    assert relay.is_outage(Parser().parse_error(reply)) is outage


async def test_a_stream_name_holding_another_type_crashes_the_relay(
    registry_copy: Path, shared_stream: tuple[str, str]
) -> None:
    """The stream's name is a string key: XADD answers WRONGTYPE, the relay crashes (the
    supervisor logs it and restarts it), no outage is logged and the order is not acked."""
    import coredis

    url, stream = shared_stream
    async with coredis.Redis.from_url(url, decode_responses=True) as redis:
        await redis.set(stream, "not a stream")
    with watching(events.SERVICE_CRASHED, RELAY) as crashed, \
            watching(events.RELAY_WAITING) as down:
        async with shop_with_relay(registry_copy, url, stream) as client:
            order_id = await checkout(client, "frank")
            with trio.fail_after(10):  # retried as an outage, it would never crash
                await crashed.wait_for(1)
            assert "WrongTypeError" in str(service(client.shop, RELAY).state.last_error)
            assert await relay_status(client, order_id) == PENDING
            assert service(client.shop, RELAY).processed == 0
    assert down.count == 0
