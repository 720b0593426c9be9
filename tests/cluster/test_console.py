"""The cluster's console: HAProxy's health checks of every node are not printed, requests are."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.postgres import fresh_schema
from trioshop import events
from trioshop.logs import event_pattern
from trioshop.testing.server import free_port, running_cluster

NODES = ("n1", "n2")
# Printed once per node process when the first of its health-check lines is dropped.
HIDDEN = event_pattern(events.HEALTH_CHECKS_NOT_PRINTED, r" node=(\w+)")
# The first checks come within a check interval of the proxy's start; generous for a busy host.
FIRST_CHECK_TIMEOUT = 30.0


def test_health_checks_are_not_printed(ample_registry: Path) -> None:
    """After several of HAProxy's /readyz checks per node, no access line of them is printed,
    while a client's requests to each node still are."""
    with fresh_schema() as database, running_cluster(
        "--nodes", str(len(NODES)), "--database", database, "--bind",
        f"127.0.0.1:{free_port()}", "--registry", str(ample_registry),
    ) as cluster:
        for node in NODES:
            notice = event_pattern(events.HEALTH_CHECKS_NOT_PRINTED, rf" node={node} ")
            cluster.wait_for_line(notice, timeout=FIRST_CHECK_TIMEOUT)
        served: dict[str, str] = {}
        with httpx.Client(base_url=cluster.base_url, timeout=10) as http:
            for n in range(50):
                answer = http.get(f"/api/cart/u{n}")
                assert answer.status_code == 200
                served.setdefault(answer.headers["X-Served-By"], f"u{n}")
                if len(served) == len(NODES):
                    break
        assert sorted(served) == sorted(NODES)
        for node, user in served.items():
            cluster.wait_for_line(
                event_pattern(
                    events.REQUEST, rf" .*method=GET path=/api/cart/{user} .* node={node}$"
                )
            )
        assert cluster.terminate() == 0
        printed = cluster.output()
    assert "path=/readyz" not in printed
    assert sorted(m.group(1) for m in HIDDEN.finditer(printed)) == sorted(NODES)
