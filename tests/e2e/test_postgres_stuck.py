"""A `trioshop run` node on PostgreSQL with rows held by another transaction, and with its
sessions ended by the server: only the requests that need a stuck row fail, in time."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.helpers import REGISTRY_DIR
from tests.postgres import fresh_schema
from trioshop.config import Settings
from trioshop.testing.registry import registry_with_stock
from trioshop.testing.server import ORDER_HANDLED, ServerProcess, running, wait_for_count

STUCK_SKU = "KB-002"
OTHER_SKU = "MON-004"
# What a stuck request may take: its deadline (checkout's, the longest) and slack for a
# loaded machine; a request that waited for the lock to be released takes far longer.
STUCK_LIMIT = Settings().checkout_timeout + 2.0
# What a request that needs no stuck row may take: its deadline (a slow machine's margin in).
FREE_LIMIT = Settings().read_timeout
# How long the test waits for SIGTERM to end the node (the graceful shutdown, and slack).
EXIT_LIMIT = Settings().shutdown_timeout + 3.0

Answer = tuple[str, int, dict[str, object], float]
Call = tuple[str, str, str, dict[str, object]]


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return registry_with_stock(REGISTRY_DIR, tmp_path / "registry", 100_000)


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh schema whose URL names its sessions (application_name) after the schema."""
    with fresh_schema() as url:
        yield f"{url}&application_name={app_name(url)}"


def app_name(url: str) -> str:
    found = re.search(r"search_path%3D(\w+)", url)
    assert found is not None, url
    return found.group(1)


def timed(http: httpx.Client, what: str, method: str, path: str, **kwargs: object) -> Answer:
    """One request: (what, status, its JSON body, seconds it took)."""
    started = time.monotonic()
    reply = http.request(method, path, **kwargs)  # type: ignore[arg-type]
    seconds = time.monotonic() - started
    try:
        body = reply.json()
    except json.JSONDecodeError:
        body = {"not json": reply.text[:200]}
    return what, reply.status_code, body, seconds


@contextmanager
def held(url: str, query: str) -> Iterator[psycopg.Connection[object]]:
    """A transaction of another client holding the rows *query* locks, until the block ends."""
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("BEGIN")
        assert other.execute(query).fetchall(), f"{query} locked nothing"
        try:
            yield other
        finally:
            other.execute("ROLLBACK")


def waiting_for_lock(url: str, name: str) -> None:
    """Return once a session named *name* waits for a lock (each check is a query, in a
    transaction of its own: a transaction sees one snapshot of pg_stat_activity)."""
    deadline = time.monotonic() + STUCK_LIMIT
    with psycopg.connect(url, autocommit=True) as conn:
        while not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
            "AND wait_event_type = 'Lock'", (name,),
        ).fetchall():
            assert time.monotonic() < deadline, "no session of the node waits for the lock"


def add(http: httpx.Client, user: str, sku: str) -> None:
    reply = http.post(f"/api/cart/{user}/items", json={"sku": sku})
    assert reply.status_code == 200, reply.text


def assert_stuck(answers: list[Answer]) -> None:
    """Each answer a clear 503/504 JSON error within the deadline."""
    for what, status, body, seconds in answers:
        assert status in (503, 504) and "error" in body, (what, status, body)
        assert seconds < STUCK_LIMIT, f"{what} took {seconds:.1f} s"


def assert_served(answers: list[Answer]) -> None:
    for what, status, body, seconds in answers:
        assert status == 200, (what, status, body)
        assert seconds < FREE_LIMIT, f"{what} took {seconds:.1f} s"


def send(http: httpx.Client, call: Call) -> Answer:
    what, method, path, arguments = call
    return timed(http, what, method, path, **arguments)


def in_parallel(http: httpx.Client, calls: list[Call]) -> list[Future[Answer]]:
    """Each call ``(what, method, path, request arguments)`` sent at once, on its own thread."""
    pool = ThreadPoolExecutor(len(calls))
    try:
        return [pool.submit(send, http, call) for call in calls]
    finally:
        pool.shutdown(wait=False)


def products(n: int) -> list[Call]:
    return [("products", "GET", "/api/products", {})] * n


def readiness(n: int) -> list[Call]:
    return [("readyz", "GET", "/readyz", {})] * n


def adds(users: list[str], sku: str, **kwargs: object) -> list[Call]:
    return [(f"add {u}", "POST", f"/api/cart/{u}/items", {"json": {"sku": sku}, **kwargs})
            for u in users]


def checkouts(users: list[str]) -> list[Call]:
    return [(f"checkout {u}", "POST", f"/api/cart/{u}/checkout", {}) for u in users]


def test_a_locked_stock_row_costs_only_the_checkouts_that_need_it(
    registry: Path, database: str
) -> None:
    """A SKU's stock row held elsewhere: its checkouts fail in time, all else is served, and
    SIGTERM still exits within the graceful shutdown."""
    with running(ServerProcess("--registry", str(registry), "--database", database)) as node:
        http = httpx.Client(base_url=node.base_url, timeout=60)
        buyers = [f"stuck{n}" for n in range(16)]  # more than the pool's connections
        for user in buyers:
            add(http, user, STUCK_SKU)
        for n in range(8):
            add(http, f"free{n}", OTHER_SKU)
        with held(database, f"SELECT 1 FROM stock WHERE sku = '{STUCK_SKU}' FOR UPDATE"):
            stuck = in_parallel(http, checkouts(buyers))
            free = in_parallel(
                http, products(4) + readiness(4) + adds([f"other{n}" for n in range(8)], OTHER_SKU)
                + checkouts([f"free{n}" for n in range(8)]),
            )
            served = [f.result() for f in free]
            assert_served(served)
            answers = [f.result() for f in stuck]
            assert_stuck(answers)
            # While it is still held: products and readiness answer, and SIGTERM exits in time.
            assert_served([timed(http, "products", "GET", "/api/products"),
                           timed(http, "readyz", "GET", "/readyz")])
            # A checkout waiting for the row when SIGTERM comes, on a connection that closes
            # after it (an idle keep-alive connection is not what this measures).
            http.close()
            closing = httpx.Client(base_url=node.base_url, timeout=60,
                                   headers={"Connection": "close"})
            [in_flight] = in_parallel(closing, checkouts(buyers[:1]))
            waiting_for_lock(database, app_name(database))
            started = time.monotonic()
            assert node.terminate(timeout=EXIT_LIMIT) == 0
            exited = time.monotonic() - started
            assert exited < Settings().shutdown_timeout, f"SIGTERM took {exited:.1f} s"
            assert_stuck([in_flight.result()])
        print(f"stuck checkouts: {sorted(round(a[3], 2) for a in answers)}; the others at "
              f"most {max(a[3] for a in served):.2f} s; exit after SIGTERM {exited:.2f} s")
    assert not [line for line in node.lines if "Traceback" in line]


def test_a_locked_cart_row_costs_only_its_users_writes(registry: Path, database: str) -> None:
    """A cart row held elsewhere: that user's adds and checkout fail in time, others' succeed."""
    with running(ServerProcess("--registry", str(registry), "--database", database)) as node:
        http = httpx.Client(base_url=node.base_url, timeout=60)
        add(http, "stuck", STUCK_SKU)
        with held(database, "SELECT 1 FROM carts WHERE user_id = 'stuck' FOR UPDATE"):
            stuck = in_parallel(
                http, adds(["stuck"] * 3, OTHER_SKU)
                + adds(["stuck"], OTHER_SKU, headers={"Idempotency-Key": "k1"}),
            )
            free = in_parallel(
                http, adds([f"user{n % 8}" for n in range(40)], STUCK_SKU) + products(4)
                + readiness(4),
            )
            served = [f.result() for f in free]
            assert_served(served)
            answers = [f.result() for f in stuck]
            answers.append(timed(http, "stuck checkout", "POST", "/api/cart/stuck/checkout"))
            assert_stuck(answers)
            assert_served([timed(http, "view stuck", "GET", "/api/cart/stuck")])
        print(f"stuck cart's writes: {sorted(round(a[3], 2) for a in answers)}; the others at "
              f"most {max(a[3] for a in served):.2f} s")
        # Released: the user's cart is writable again, and holds what it held.
        assert_served([timed(http, "add after", "POST", "/api/cart/stuck/items",
                             json={"sku": STUCK_SKU})])
        items = http.get("/api/cart/stuck").json()["items"]
        assert {i["sku"]: i["quantity"] for i in items}.get(STUCK_SKU) == 2, items
        assert node.terminate() == 0
    assert not [line for line in node.lines if "Traceback" in line]


def test_sessions_the_database_ended_cost_no_request(registry: Path, database: str) -> None:
    """Every session of the node ended by the server: the next requests of every kind succeed."""
    with running(ServerProcess("--registry", str(registry), "--database", database)) as node:
        http = httpx.Client(base_url=node.base_url, timeout=60)
        for n in range(4):
            add(http, f"buyer{n}", STUCK_SKU)
        placed = http.post("/api/cart/buyer0/checkout")
        assert placed.status_code == 200
        # Warm the pool: several connections open at once.
        warm = in_parallel(http, products(12))
        assert_served([f.result() for f in warm])
        with psycopg.connect(database, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()", (app_name(database),)
            ).fetchall()
        assert len(ended) >= 3  # the listener and pooled connections
        answers = [
            timed(http, "products", "GET", "/api/products"),
            timed(http, "view", "GET", "/api/cart/buyer1"),
            timed(http, "add", "POST", "/api/cart/buyer1/items", json={"sku": OTHER_SKU}),
            timed(http, "keyed add", "POST", "/api/cart/buyer2/items", json={"sku": OTHER_SKU},
                  headers={"Idempotency-Key": "once"}),
            timed(http, "checkout", "POST", "/api/cart/buyer1/checkout"),
            timed(http, "orders", "GET", "/api/users/buyer0/orders"),
            timed(http, "order", "GET", f"/api/orders/{placed.json()['order']['order_id']}"),
            timed(http, "readyz", "GET", "/readyz"),
        ]
        for what, status, body, _ in answers:
            assert status == 200, (what, status, body)
        # The services' outbox claims and acks went through too: both orders handled twice.
        wait_for_count([node], ORDER_HANDLED, 4)
        assert node.terminate() == 0
    assert not [line for line in node.lines if "store unavailable" in line]
    assert not [line for line in node.lines if "Traceback" in line]
