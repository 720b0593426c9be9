"""The orders relay through real servers: two nodes on PostgreSQL, a Redis outage under
checkouts, a node killed mid-publish. Every order reaches the stream (at least once)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.helpers import REGISTRY_DIR
from tests.postgres import fresh_schema
from tests.redis import fresh_stream, private_redis
from trioshop import events
from trioshop.logs import event_pattern
from trioshop.testing.redis import read_stream
from trioshop.testing.registry import registry_with_stock
from trioshop.testing.server import ServerProcess, running, wait_for_count

PUBLISHED = event_pattern(events.ORDER_HANDLED, r" service=relay order_id=(\w+)")
REDIS_DOWN = event_pattern(events.RELAY_WAITING)
REDIS_BACK = event_pattern(events.RELAY_PUBLISHING_AGAIN)
CLAIM_OUT = event_pattern(events.CLAIM_RUNNING_OUT, r" service=relay order_id=(\w+)")
# A checkout's own deadline (--checkout-timeout's default) and a margin for the HTTP stack.
CHECKOUT_TIMEOUT = 5.0 + 1.0


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """The shipped registry with plenty of stock."""
    return registry_with_stock(REGISTRY_DIR, tmp_path / "registry", 100_000, {})


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


def relay_node(registry: Path, redis: str, stream: str, *args: str) -> ServerProcess:
    return ServerProcess(
        "--registry", str(registry), "--events-redis", redis, "--events-stream", stream, *args
    )


def buy(client: httpx.Client, user: str) -> str:
    """One add and a checkout for *user*, each answered 200 within its timeout; the order id."""
    added = client.post(f"/api/cart/{user}/items", json={"sku": "KB-002"}, timeout=CHECKOUT_TIMEOUT)
    assert added.status_code == 200, added.text
    placed = client.post(f"/api/cart/{user}/checkout", timeout=CHECKOUT_TIMEOUT)
    assert placed.status_code == 200, placed.text
    return str(placed.json()["order"]["order_id"])


def wait_published(servers: list[ServerProcess], orders: list[str]) -> None:
    """Until the *servers* together logged every order of *orders* as published (an order
    may be published more than once)."""
    count = len(orders)
    while not set(orders) <= {m.group(1) for m in wait_for_count(servers, PUBLISHED, count)}:
        count += 1


def test_orders_on_two_nodes_all_arrive_once_each_after_deduplication(
    registry: Path, database: str
) -> None:
    """Two nodes on one schema: each user's two orders, placed one on each node, all reach
    the stream; de-duplicated by order id, each once, and each user's in placing order."""
    args = ("--database", database)
    with fresh_stream() as (url, stream), ExitStack() as stack:
        servers = [
            stack.enter_context(running(relay_node(registry, url, stream, *args)))
            for _ in range(2)
        ]
        http = [httpx.Client(base_url=s.base_url) for s in servers]

        def user_buys_twice(n: int) -> list[str]:
            return [buy(http[(n + i) % 2], f"u{n}") for i in range(2)]

        with ThreadPoolExecutor(8) as pool:
            placed = dict(zip(range(12), pool.map(user_buys_twice, range(12)), strict=True))
        orders = [order for pair in placed.values() for order in pair]
        wait_published(servers, orders)
        entries = read_stream(url, stream)
    first_seen = list(dict.fromkeys(e["order_id"] for e in entries))
    assert sorted(first_seen) == sorted(orders)
    for n, (first, second) in placed.items():
        assert first_seen.index(first) < first_seen.index(second), f"user u{n} out of order"
        assert {e["user_id"] for e in entries if e["order_id"] in (first, second)} == {f"u{n}"}


def test_redis_down_under_checkouts_loses_nothing_and_slows_no_checkout(
    registry: Path, tmp_path: Path
) -> None:
    """Redis killed while checkouts go on: every checkout answers 200 in time, the outage is
    logged once; Redis back: every order is in the stream, in placing order."""
    (tmp_path / "redis").mkdir()
    with private_redis(str(tmp_path / "redis")) as redis, \
            running(relay_node(registry, redis.url, "orders", "--data-dir", str(tmp_path))) \
            as server, httpx.Client(base_url=server.base_url) as client:
        before = [buy(client, f"b{n}") for n in range(3)]
        wait_published([server], before)
        redis.stop()
        during = [buy(client, f"d{n % 4}") for n in range(12)]
        server.wait_for_line(REDIS_DOWN)
        during += [buy(client, f"d{n % 4}") for n in range(12)]
        redis.start()
        wait_published([server], before + during)
        server.wait_for_line(REDIS_BACK)
        assert len(REDIS_DOWN.findall(server.output())) == 1
        entries = read_stream(redis.url, "orders")
    assert list(dict.fromkeys(e["order_id"] for e in entries)) == before + during


def test_a_node_killed_mid_publish_leaves_the_order_to_another_node(
    registry: Path, database: str
) -> None:
    """Redis hangs (SIGSTOP) under an XADD, the node is SIGKILLed: after the claim timeout a
    second node publishes the order."""
    # 5 s: the XADD times out (2 s, logged) before the claim nears its end (3 s).
    args = ("--database", database, "--outbox-claim-timeout", "5")
    with private_redis() as redis:
        with running(relay_node(registry, redis.url, "orders", *args)) as first, \
                httpx.Client(base_url=first.base_url) as client:
            redis.pause()
            order = buy(client, "killed")  # answered though the relay hangs
            first.wait_for_line(REDIS_DOWN)  # its XADD is in flight, or being retried
            first.kill()
        redis.resume()
        with running(relay_node(registry, redis.url, "orders", *args)) as second:
            wait_published([second], [order])
        assert order in {e["order_id"] for e in read_stream(redis.url, "orders")}


def wait_for_a_second_claim(servers: list[ServerProcess]) -> None:
    """Until the *servers* together logged one order's claim running out twice: its first
    claim ended unacknowledged and it was claimed again."""
    count = 2
    while True:
        ran_out = [m.group(1) for m in wait_for_count(servers, CLAIM_OUT, count)]
        if len(ran_out) > len(set(ran_out)):
            return
        count = len(ran_out) + 1


def until_each_node_published_again(servers: list[ServerProcess], user: str) -> None:
    """Orders of *user*, one at a time on each server in turn, until every server whose relay
    logged the outage logged publishing again: none has an XADD of the outage in a retry."""
    for n in range(40):
        if not any(REDIS_DOWN.search(s.output()) and not REDIS_BACK.search(s.output())
                   for s in servers):
            return
        with httpx.Client(base_url=servers[n % len(servers)].base_url) as client:
            wait_published(servers, [buy(client, user)])
    raise AssertionError("a node's relay never published again after the outage")


def test_redis_paused_past_the_claim_keeps_a_users_orders_in_order(
    registry: Path, database: str
) -> None:
    """A 5 s claim; Redis paused; a user's four orders placed on a first node, whose relay
    claims the first; a second node started; Redis resumed only once an order was claimed
    again after its claim ran out, then until each relay published again: every order is in
    the stream, and no entry (a repeat or not) comes after an entry of a later order of that
    user. (Before the fix the first node, still retrying its expired claim, published the
    first order again after the second node had published all four.)"""
    args = ("--database", database, "--outbox-claim-timeout", "5")
    with private_redis() as redis, ExitStack() as stack:
        first = stack.enter_context(running(relay_node(registry, redis.url, "orders", *args)))
        redis.pause()
        with httpx.Client(base_url=first.base_url) as client:
            orders = [buy(client, "patient") for _ in range(4)]
        first.wait_for_line(REDIS_DOWN)
        second = stack.enter_context(running(relay_node(registry, redis.url, "orders", *args)))
        wait_for_a_second_claim([first, second])
        redis.resume()
        wait_published([first, second], orders)
        until_each_node_published_again([first, second], "other")
        entries = read_stream(redis.url, "orders")
    assert {e["order_id"] for e in entries if e["user_id"] == "patient"} == set(orders)
    turns = [orders.index(e["order_id"]) for e in entries if e["user_id"] == "patient"]
    assert turns == sorted(turns), turns
