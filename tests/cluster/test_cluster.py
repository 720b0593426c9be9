"""`trioshop cluster`: three real nodes behind a real HAProxy on one PostgreSQL schema."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from tests.helpers import AddTally, buy_one
from tests.postgres import fresh_schema
from trioshop.cluster.haproxy import Backend, haproxy_config
from trioshop.testing.server import ClusterProcess, free_port, running_cluster, wait_for_count

DISPATCHED = re.compile(r"DELIVERY package dispatched.* order_id=(\w+)")


def three_nodes(registry: Path, database: str) -> AbstractContextManager[ClusterProcess]:
    """A cluster of three nodes on *database*, started, killed on exit if still running."""
    return running_cluster(
        "--nodes", "3", "--database", database, "--bind", f"127.0.0.1:{free_port()}",
        "--registry", str(registry), "--node-args", "--outbox-claim-timeout 5",
    )


@pytest.fixture(scope="module")
def cluster(registry: Path) -> Iterator[ClusterProcess]:
    """One cluster for the tests that do not kill nodes."""
    with fresh_schema() as database, three_nodes(registry, database) as running:
        yield running
        assert running.terminate() == 0


def test_seed_flow_through_the_proxy(cluster: ClusterProcess) -> None:
    """The seed's manual flow works through HAProxy, and the order is delivered once."""
    with httpx.Client(base_url=cluster.base_url, timeout=10) as http:
        assert len(http.get("/api/products").json()["products"]) == 5
        http.post("/api/cart/alice/items", json={"sku": "LAPTOP-001", "quantity": 1})
        http.post("/api/cart/alice/items", json={"sku": "KB-002", "quantity": 2})
        assert http.get("/api/cart/alice").json()["total"] == 1799.97
        order = http.post("/api/cart/alice/checkout").json()["order"]["order_id"]
        empty = http.get("/api/cart/alice").json()
        assert empty["message"] == "Cart is empty (no active session)"
        assert http.get("/readyz").status_code == 200
    dispatched = wait_for_count([cluster], re.compile(rf"package dispatched.*{order}"), 1)
    emailed = wait_for_count([cluster], re.compile(rf"EMAIL sent to alice.*{order}"), 1)
    assert len(dispatched) == len(emailed) == 1


def test_each_user_stays_on_one_node(cluster: ClusterProcess) -> None:
    """While nothing fails, every request of a user is served by the same node."""
    with httpx.Client(base_url=cluster.base_url, timeout=10) as http:
        served: dict[str, set[str]] = {}
        for round_ in range(3):
            for n in range(60):
                user = f"sticky{n}"
                reply = (
                    http.post(f"/api/cart/{user}/items", json={"sku": "KB-002"})
                    if round_ == 0 else http.get(f"/api/cart/{user}")
                )
                assert reply.status_code == 200
                served.setdefault(user, set()).add(reply.headers["X-Served-By"])
        assert all(len(nodes) == 1 for nodes in served.values())
        assert len(set().union(*served.values())) == 3  # and the users spread over all nodes


def test_parallel_shoppers_never_oversell(cluster: ClusterProcess) -> None:
    """200 shoppers race for 20 monitors through the proxy: 20 orders, each delivered once."""
    with httpx.Client(base_url=cluster.base_url, timeout=30) as http:

        with ThreadPoolExecutor(16) as pool:
            statuses = Counter(
                pool.map(lambda n: buy_one(http, f"racer{n}", "MON-004"), range(200))
            )
        assert statuses[200] == 20 and set(statuses) <= {200, 409}
        stock = {p["sku"]: p["stock"] for p in http.get("/api/products").json()["products"]}
        assert stock["MON-004"] == 0
    monitors = re.compile(r"DELIVERY packing item.* sku=MON-004")
    wait_for_count([cluster], monitors, 20)
    dispatched = Counter(m.group(1) for line in cluster.lines if (m := DISPATCHED.search(line)))
    assert sum(1 for line in cluster.lines if monitors.search(line)) == 20
    assert max(dispatched.values()) == 1  # no order delivered twice, cluster-wide


def test_a_killed_node_loses_nothing_and_its_users_come_back(registry: Path) -> None:
    """kill -9 a node in a burst of adds: every acknowledged add survives, and its users move."""
    # Then the cluster restarts the node: its users come back to it, and a cart cleared while
    # it was down stays cleared (nothing comes back).
    with fresh_schema() as database, three_nodes(registry, database) as cluster:
        http = httpx.Client(base_url=cluster.base_url, timeout=30)
        homes = {
            user: http.post(f"/api/cart/{user}/items", json={"sku": "KB-002"})
            .headers["X-Served-By"]
            for user in (f"burst{n}" for n in range(30))
        }
        victim = Counter(homes.values()).most_common(1)[0][0]
        tally = AddTally(acknowledged=Counter(dict.fromkeys(homes, 1)))

        def add(n: int) -> None:
            tally.add(http, f"burst{n % 30}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(add, range(150)))
            os.kill(cluster.node_pid(victim), signal.SIGKILL)
            list(pool.map(add, range(150, 300)))
        moved = [user for user, home in homes.items() if home == victim]
        for user in homes:
            reply = http.get(f"/api/cart/{user}")
            assert reply.headers["X-Served-By"] != victim
            tally.check(reply, user)
        cleared = moved[0]  # cleared while its home node is down
        assert http.delete(f"/api/cart/{cleared}").status_code == 204

        wait_for_count([cluster], re.compile(rf"\"node started\" node={victim} "), 2)
        returning = moved[1]
        # The proxy's checks need two passes (1 s) to take it back: each request is the wait,
        # bounded far above that so a node that never comes back fails instead of hanging.
        deadline = time.monotonic() + 30
        while (served := http.get(f"/api/cart/{returning}").headers["X-Served-By"]) != victim:
            assert time.monotonic() < deadline, (
                f"{returning} still served by {served}, not by the restarted {victim}, 30 s "
                "after it started"
            )
        assert http.get(f"/api/cart/{cleared}").json()["items"] == []  # nothing resurrected
        before = http.get(f"/api/cart/{returning}").json()["items"][0]["quantity"]
        assert http.post(f"/api/cart/{returning}/items", json={"sku": "KB-002"}).is_success
        after = http.get(f"/api/cart/{returning}")
        assert after.headers["X-Served-By"] == victim
        assert after.json()["items"][0]["quantity"] == before + 1
        assert cluster.terminate() == 0


def test_shipped_config_is_the_generated_one() -> None:
    """deploy/haproxy.cfg is exactly what `trioshop cluster` writes, for three machines."""
    shipped = Path(__file__).parents[2] / "deploy" / "haproxy.cfg"
    backends = [Backend(f"n{i}", i, f"10.0.0.{i}:8080") for i in (1, 2, 3)]
    assert shipped.read_text() == haproxy_config("0.0.0.0:8080", backends)
