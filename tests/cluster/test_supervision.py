"""`trioshop cluster` supervision: a node that cannot start fails the cluster with its reason;
after the cluster is ready, failed restarts are retried with backoff and logged with their
reason; a dead HAProxy is started again."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.helpers import REGISTRY_DIR, run_trioshop
from tests.postgres import fresh_schema
from trioshop import events
from trioshop.logs import event_pattern
from trioshop.testing.registry import registry_with_stock
from trioshop.testing.server import ClusterProcess, free_port, running_cluster, wait_for_count

RETRY = event_pattern(
    events.NODE_RESTART_FAILED,
    r' node=n1 .*reason="([^"]*invalid registry[^"]*)".* retry_in=([\d.]+)',
)
CLUSTER_TIMEOUT = 90  # seconds a failing cluster may take to give up, far above its start


@pytest.fixture
def own_registry(tmp_path: Path) -> Path:
    """A registry copy this test may break and repair."""
    return registry_with_stock(REGISTRY_DIR, tmp_path / "registry", 1_000_000)


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


def break_registry(folder: Path) -> str:
    """Make *folder*'s products unreadable; returns the original text to restore."""
    products = folder / "products.yaml"
    original = products.read_text()
    products.write_text("products: [this is not a product\n")
    return original


def cluster_args(registry: Path, database: str, nodes: int = 2) -> tuple[str, ...]:
    return (
        "--nodes", str(nodes), "--database", database, "--bind", f"127.0.0.1:{free_port()}",
        "--registry", str(registry),
    )


def test_a_database_from_a_newer_trioshop_fails_the_cluster(
    registry: Path, database: str
) -> None:
    """A schema newer than this trioshop: exit 1 with the node's reason, never "cluster ready"."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY)")
        conn.execute("INSERT INTO schema_version VALUES (999)")
    result = run_trioshop("cluster", *cluster_args(registry, database), timeout=CLUSTER_TIMEOUT)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "newer than this trioshop" in result.stderr, result.stderr
    assert result.stderr.startswith("trioshop cluster: node n"), result.stderr
    assert "cluster ready" not in result.stdout


def test_an_unreachable_database_fails_the_cluster(registry: Path) -> None:
    """A database URL nothing answers at: exit 1 saying the node cannot connect, and why."""
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    result = run_trioshop("cluster", *cluster_args(registry, nowhere), timeout=CLUSTER_TIMEOUT)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "cannot connect to PostgreSQL" in result.stderr, result.stderr
    assert "cluster ready" not in result.stdout


def test_a_failed_restart_is_retried_with_backoff_until_it_can(
    own_registry: Path, database: str
) -> None:
    """A killed node whose restarts fail (bad registry) is retried, each failure logged with the
    reason and a growing delay, and comes back once the registry is repaired."""
    with running_cluster(*cluster_args(own_registry, database)) as cluster:
        original = break_registry(own_registry)
        os.kill(cluster.node_pid("n1"), signal.SIGKILL)
        retries = wait_for_count([cluster], RETRY, 3, timeout=120)
        delays = [float(m.group(2)) for m in retries]
        assert delays == sorted(delays) and delays[0] < delays[-1], delays
        (own_registry / "products.yaml").write_text(original)
        wait_for_count([cluster], event_pattern(events.NODE_STARTED, " node=n1 "), 2, timeout=120)
        assert cluster.terminate() == 0


def test_a_rolling_restart_with_a_bad_registry_names_the_node_and_why(
    own_registry: Path, database: str
) -> None:
    """SIGHUP with a broken registry: the rolling restart stops at n1 and logs n1's reason; n2 is
    left running; n1 comes back once the registry is repaired."""
    with running_cluster(*cluster_args(own_registry, database)) as cluster:
        original = break_registry(own_registry)
        assert cluster.process is not None
        cluster.process.send_signal(signal.SIGHUP)
        stopped = cluster.wait_for_line(
            event_pattern(events.ROLLING_RESTART_STOPPED, r' .*node=n1 .*reason="([^"]*)"'),
            timeout=120,
        )
        assert "invalid registry" in stopped.group(1), stopped.group(0)
        n2 = cluster.node_pid("n2")
        (own_registry / "products.yaml").write_text(original)
        wait_for_count([cluster], event_pattern(events.NODE_STARTED, " node=n1 "), 2, timeout=120)
        assert cluster.node_pid("n2") == n2  # the restart did not go on to the next node
        assert not any("rolling restart done" in line for line in cluster.lines)
        assert cluster.terminate() == 0


def test_a_dead_proxy_is_started_again(registry: Path, database: str) -> None:
    """kill -9 of HAProxy: the cluster logs it, starts it again, and serves through it."""
    with running_cluster(*cluster_args(registry, database)) as cluster:
        first = cluster.proxy_pid()
        os.kill(first, signal.SIGKILL)
        cluster.wait_for_line(event_pattern(events.PROXY_EXITED, " .*code=-9"), timeout=60)
        wait_for_count([cluster], ClusterProcess.PROXY_STARTED, 2, timeout=60)
        assert cluster.proxy_pid() != first
        with httpx.Client(base_url=cluster.base_url, timeout=30) as http:
            assert http.get("/api/products").status_code == 200
        assert cluster.terminate() == 0
