"""Stopping `trioshop cluster`: Ctrl-C to its process group drains (no request applied without
an answer), a second signal cuts the drain short, and a stop during startup exits cleanly."""

from __future__ import annotations

import http.client
import os
import re
import signal
import threading
from collections import Counter
from pathlib import Path

import httpx
import trio

from tests.postgres import fresh_schema
from trioshop import events
from trioshop.cluster.proxy_admin import ProxyAdmin
from trioshop.cluster.runner import PROXY_STATE_POLL
from trioshop.logs import event_pattern
from trioshop.testing.server import (
    ClusterProcess,
    free_port,
    running,
    running_cluster,
    running_server,
    wait_for_count,
)

REQUEST = event_pattern(events.REQUEST, r" .*node=n\d")
SHOPPERS = 8
EXIT_TIMEOUT = 60.0  # seconds the cluster may take to drain and stop, far above what it needs


class Shopper(threading.Thread):
    """Adds to one user's cart in a loop until told to stop or a request gets no answer; sums
    the quantities answered 200 and those sent without an answer."""

    def __init__(self, base_url: str, user: str, done: threading.Event) -> None:
        super().__init__(daemon=True)
        self.base_url, self.user, self.done = base_url, user, done
        self.answered = 0  # quantity in adds answered 200
        self.unanswered = 0  # quantity in adds that got no answer at all
        self.requests = Counter[str]()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            sent = 0
            while not self.done.is_set():
                quantity = 1 + sent % 3
                sent += 1
                try:
                    reply = http.post(
                        f"/api/cart/{self.user}/items", json={"sku": "KB-002", "quantity": quantity}
                    )
                except httpx.TransportError:  # the proxy no longer accepts: stop sending
                    self.unanswered += quantity
                    self.requests["no answer"] += 1
                    return
                self.requests[str(reply.status_code)] += 1
                if reply.status_code == 200:
                    self.answered += quantity


def stored_quantities(database: str, registry: Path, users: list[str]) -> dict[str, int]:
    """Each user's cart quantity as stored, read by a node started afresh on *database*."""
    with running_server("--database", database, "--registry", str(registry)) as node, \
            httpx.Client(base_url=node.base_url, timeout=30) as http:
        return {
            user: sum(item["quantity"] for item in http.get(f"/api/cart/{user}").json()["items"])
            for user in users
        }


def test_ctrl_c_to_the_process_group_drains_under_load(ample_registry: Path) -> None:
    """SIGINT to the cluster's whole process group under load: the proxy drains first, every
    add in the database got its answer, every add answered is in the database, exit 0."""
    with fresh_schema() as database:
        with running_cluster(
            "--nodes", "3", "--database", database, "--bind", f"127.0.0.1:{free_port()}",
            "--registry", str(ample_registry),
        ) as cluster:
            assert cluster.process is not None
            done = threading.Event()
            shoppers = [Shopper(cluster.base_url, f"stop{n}", done) for n in range(SHOPPERS)]
            for shopper in shoppers:
                shopper.start()
            try:
                wait_for_count([cluster], REQUEST, 300)  # the shoppers are at it
                os.killpg(cluster.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
                code = cluster.process.wait(timeout=EXIT_TIMEOUT)
            finally:
                done.set()
                for shopper in shoppers:
                    shopper.join(timeout=60)
        stored = stored_quantities(database, ample_registry, [s.user for s in shoppers])
    answered = {s.user: s.answered for s in shoppers}
    unanswered = sum(s.unanswered for s in shoppers)
    applied_without_answer = sum(max(stored[u] - answered[u], 0) for u in stored)
    requests = sum((s.requests for s in shoppers), Counter[str]())
    print(  # the figure, shown with -s or when the test fails
        f"requests {dict(requests)}; quantity answered {sum(answered.values())}, stored "
        f"{sum(stored.values())}, sent without answer {unanswered}, applied without answer "
        f"{applied_without_answer}"
    )
    assert stored == answered, (stored, answered, dict(requests))
    assert code == 0, cluster.output()[-3000:]
    assert requests["200"] > 0


def test_a_stop_during_startup_exits_cleanly(registry: Path) -> None:
    """SIGTERM once the first node started, before the cluster is ready: exit 0, stopped."""
    with fresh_schema() as database:
        cluster = ClusterProcess(
            "--nodes", "3", "--database", database, "--bind", f"127.0.0.1:{free_port()}",
            "--registry", str(registry),
        )
        cluster.ready = event_pattern(events.NODE_STARTED, " node=(n1) ")
        with running(cluster):
            assert cluster.process is not None
            cluster.process.send_signal(signal.SIGTERM)
            assert cluster.process.wait(timeout=EXIT_TIMEOUT) == 0, cluster.output()[-3000:]
            cluster.wait_for_line(ClusterProcess.stopped, timeout=5)
            assert not any("cluster ready" in line for line in cluster.lines)


def wait_in_flight(admin_socket: Path, server: str) -> None:
    """Until the proxy counts a request in flight on *server* (asked every PROXY_STATE_POLL s: it
    pushes no notice), for up to 30 s."""

    async def poll() -> None:
        admin = ProxyAdmin(str(admin_socket))
        with trio.fail_after(30):
            while True:
                if int((await admin.server(server)).get("scur") or 0):
                    return
                await trio.sleep(PROXY_STATE_POLL)

    trio.run(poll)


def test_a_second_signal_stops_the_proxy_without_waiting(registry: Path, tmp_path: Path) -> None:
    """A request that never finishes holds the proxy's drain; a second SIGTERM ends it: exit 0."""
    config = tmp_path / "haproxy.cfg"
    with fresh_schema() as database, running_cluster(
        "--nodes", "1", "--database", database, "--bind", f"127.0.0.1:{free_port()}",
        "--registry", str(registry), "--config", str(config),
    ) as cluster:
        assert cluster.process is not None
        held = http.client.HTTPConnection(*cluster.address, timeout=30)
        held.request("GET", "/readyz")  # answered: the proxy holds this connection
        assert held.getresponse().read()
        held.putrequest("POST", "/api/cart/slow/items")  # a body announced and never sent
        held.putheader("Content-Type", "application/json")
        held.putheader("Content-Length", "100")
        held.endheaders(b"{")
        wait_in_flight(config.with_name("haproxy-admin.sock"), "n1")
        cluster.process.send_signal(signal.SIGTERM)
        cluster.wait_for_line(re.compile(r'event="proxy draining"'))
        cluster.process.send_signal(signal.SIGTERM)
        cluster.wait_for_line(
            re.compile(r'event="proxy stopped before it drained" after="a second stop signal"')
        )
        assert cluster.process.wait(timeout=EXIT_TIMEOUT) == 0, cluster.output()[-3000:]
