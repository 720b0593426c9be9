"""A rolling restart of every node under the seed's load scenario: not one request fails."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.postgres import fresh_schema
from trioshop import events
from trioshop.logs import event_pattern
from trioshop.testing.server import free_port, running_cluster, wait_for_count

LOAD = Path(__file__).parents[2] / "bench" / "load.py"
REQUEST = event_pattern(events.REQUEST, r" .*node=n\d")
RESTARTED = event_pattern(events.NODE_RESTARTED, r" node=(n\d)")


def test_rolling_restart_under_load_fails_no_request(ample_registry: Path) -> None:
    """SIGHUP restarts the 3 nodes one by one while shoppers shop: 0 failed, p95 < 500 ms."""
    with fresh_schema() as database, running_cluster(
        "--nodes", "3", "--database", database, "--bind", f"127.0.0.1:{free_port()}",
        "--registry", str(ample_registry),
    ) as cluster:
        load = subprocess.Popen(
            [sys.executable, str(LOAD), "--base-url", cluster.base_url, "--vus", "10",
             "--duration", "25s", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        wait_for_count([cluster], REQUEST, 50)  # the shoppers are at it
        assert cluster.process is not None
        cluster.process.send_signal(signal.SIGHUP)
        cluster.wait_for_line(event_pattern(events.ROLLING_RESTART_DONE), timeout=60)
        out, err = load.communicate(timeout=90)
        assert out, err
        summary = json.loads(out)
        restarted = {m.group(1) for line in cluster.lines if (m := RESTARTED.search(line))}
        assert restarted == {"n1", "n2", "n3"}
        assert summary["overall"]["failed"] == 0, summary["statuses"]
        assert summary["overall"]["p95_ms"] < 500, summary["overall"]
        assert summary["checkouts_completed"] > 0
        assert load.returncode == 0  # the scenario's own thresholds hold too
        assert cluster.terminate() == 0
