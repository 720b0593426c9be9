"""An empty cart answers one body whatever the node knows of it: never used, emptied, checked
out, on one node or on either of two nodes sharing a PostgreSQL database."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import REGISTRY_DIR
from tests.postgres import fresh_schema
from trioshop.testing.server import ServerProcess, running, running_server


def empty(user_id: str) -> dict[str, Any]:
    """The documented body of an empty cart (docs/http-api.md)."""
    return {
        "user_id": user_id, "items": [], "total": 0,
        "message": "Cart is empty (no active session)",
    }


def add(http: httpx.Client, user_id: str) -> None:
    reply = http.post(f"/api/cart/{user_id}/items", json={"sku": "KB-002", "quantity": 1})
    assert reply.status_code == 200, reply.text


def test_every_empty_cart_answers_the_same_on_one_node(tmp_path: Path) -> None:
    """Never used, emptied line by line (its cart still live), checked out: one body."""
    with running_server(
        "--registry", str(REGISTRY_DIR), "--data-dir", str(tmp_path)
    ) as server, httpx.Client(base_url=server.base_url, timeout=30) as http:
        assert http.get("/api/cart/never").json() == empty("never")

        add(http, "emptied")
        removed = http.delete("/api/cart/emptied/items/KB-002")
        assert (removed.status_code, removed.json()) == (200, empty("emptied"))
        assert http.get("/api/cart/emptied").json() == empty("emptied")

        add(http, "bought")
        assert http.post("/api/cart/bought/checkout").status_code == 200
        assert http.get("/api/cart/bought").json() == empty("bought")
        assert server.terminate() == 0


def test_every_empty_cart_answers_the_same_on_two_postgres_nodes() -> None:
    """A cart emptied or checked out on one node reads the same on both, live there or not."""
    with fresh_schema() as database, ExitStack() as stack:
        servers = [
            stack.enter_context(running(ServerProcess(
                "--registry", str(REGISTRY_DIR), "--database", database,
            )))
            for _ in range(2)
        ]
        first, second = (
            stack.enter_context(httpx.Client(base_url=s.base_url, timeout=30)) for s in servers
        )
        for http in (first, second):
            assert http.get("/api/cart/never").json() == empty("never")

        add(first, "emptied")
        assert first.delete("/api/cart/emptied/items/KB-002").status_code == 200
        for http in (first, second):  # live on the first node only
            assert http.get("/api/cart/emptied").json() == empty("emptied")

        add(first, "bought")
        assert first.post("/api/cart/bought/checkout").status_code == 200
        for http in (first, second):
            assert http.get("/api/cart/bought").json() == empty("bought")

        add(first, "roamer")
        assert second.get("/api/cart/roamer").json()["items"]  # now live on both nodes
        assert first.post("/api/cart/roamer/checkout").status_code == 200
        for http in (first, second):
            assert http.get("/api/cart/roamer").json() == empty("roamer")
        for server in servers:
            assert server.terminate() == 0
