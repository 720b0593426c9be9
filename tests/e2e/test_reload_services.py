"""Services removed and added by a registry reload, on the real server (SQLite, PostgreSQL):
orders go only to the services that exist when they are placed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.postgres import fresh_schema
from trioshop import events
from trioshop.logs import event_pattern
from trioshop.testing.server import ORDER_HANDLED, ServerProcess, running

HANDLED_TIMEOUT = 60.0  # the services of a loaded machine answer within this
NOTIFIER = "\n  - name: notifier"
AUDIT = """
  - name: audit
    kind: process.service
    subscribe: shop/order.checkout
    process: trioshop.shop.notifier:run
    lifecycle:
      restart:
        max_attempts: 10
        initial_delay: 1s
"""


@pytest.fixture(params=["sqlite", "postgres"])
def store_args(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    """The server's store option: SQLite in a fresh folder, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield ["--data-dir", str(tmp_path / "data")]
    else:
        with fresh_schema() as url:  # skips (fails in CI) when no server answers
            yield ["--database", url]


def buy(http: httpx.Client, user_id: str) -> str:
    """One add and a checkout for *user_id*; the order's id."""
    added = http.post(f"/api/cart/{user_id}/items", json={"sku": "KB-002", "quantity": 1})
    assert added.status_code == 200, added.text
    checked_out = http.post(f"/api/cart/{user_id}/checkout")
    assert checked_out.status_code == 200, checked_out.text
    return str(checked_out.json()["order"]["order_id"])


def wait_handled(server: ServerProcess, service: str, order_id: str) -> None:
    server.wait_for_line(
        event_pattern(events.ORDER_HANDLED, rf" service={service} order_id={order_id}\b"),
        timeout=HANDLED_TIMEOUT,
    )


def reload(http: httpx.Client) -> dict[str, list[str]]:
    reply = http.post("/api/admin/registry/reload")
    assert reply.status_code == 200, reply.text
    return {k: v for k, v in reply.json().items() if k.startswith("services_")}


def test_a_removed_service_gets_no_orders_and_services_added_start_from_new_ones(
    registry_copy: Path, store_args: list[str]
) -> None:
    """Removed: no order queued for it; back (or new), it handles only orders placed after."""
    processes = registry_copy / "processes.yaml"
    shipped = processes.read_text()
    assert NOTIFIER in shipped and shipped.rstrip().endswith("initial_delay: 1s")
    server = ServerProcess("--registry", str(registry_copy), *store_args)
    with running(server), httpx.Client(base_url=server.base_url, timeout=30) as http:
        before = buy(http, "before")
        wait_handled(server, "notifier", before)

        processes.write_text(shipped.split(NOTIFIER)[0] + "\n")
        assert reload(http)["services_stopped"] == ["notifier"]
        while_gone = buy(http, "gone")
        wait_handled(server, "delivery", while_gone)

        processes.write_text(shipped.rstrip() + "\n" + AUDIT)
        assert reload(http)["services_started"] == ["audit", "notifier"]
        after = buy(http, "after")
        for service in ("delivery", "notifier", "audit"):
            wait_handled(server, service, after)

        handled = {(m.group(1), m.group(2)) for line in server.output().splitlines()
                   if (m := ORDER_HANDLED.search(line))}
        assert handled == {
            (service, order) for service in ("delivery", "notifier") for order in (before, after)
        } | {("delivery", while_gone), ("audit", after)}
        assert server.terminate() == 0


def test_a_service_removed_while_the_node_was_down_comes_back_without_a_backlog(
    registry_copy: Path, store_args: list[str]
) -> None:
    """Started without a service, the node queues it nothing; started with it again, it
    handles only the orders placed after."""
    processes = registry_copy / "processes.yaml"
    shipped = processes.read_text()

    def run_once(user_id: str, *services: str) -> tuple[str, set[tuple[str, str]]]:
        """Start the node, buy once, wait until *services* handled the order, stop: the order
        and every order handled meanwhile."""
        server = ServerProcess("--registry", str(registry_copy), *store_args)
        with running(server), httpx.Client(base_url=server.base_url, timeout=30) as http:
            order = buy(http, user_id)
            for service in services:
                wait_handled(server, service, order)
            assert server.terminate() == 0
        return order, {
            (m.group(1), m.group(2)) for line in server.lines if (m := ORDER_HANDLED.search(line))
        }

    run_once("before", "delivery", "notifier")
    processes.write_text(shipped.split(NOTIFIER)[0] + "\n")
    while_gone, _ = run_once("gone", "delivery")
    processes.write_text(shipped)
    after, handled = run_once("after", "delivery", "notifier")
    assert ("notifier", while_gone) not in handled
    assert handled == {("delivery", after), ("notifier", after)}
