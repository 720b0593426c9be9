"""`trioshop cluster` on a port another program holds: refused in one line, nothing served."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.helpers import run_trioshop
from tests.postgres import fresh_schema
from trioshop import events
from trioshop.logs import event_pattern

# Far more than a refused start takes (a node start, then HAProxy's bind failure).
REFUSED_WITHIN = 60.0


def test_a_cluster_on_a_taken_port_fails_naming_the_port(registry: Path) -> None:
    """HAProxy cannot bind a port another socket holds: exit 1, one line naming the port."""
    with socket.socket() as squatter, fresh_schema() as database:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = run_trioshop(
            "cluster", "--nodes", "1", "--database", database, "--bind", f"127.0.0.1:{port}",
            "--registry", str(registry), timeout=REFUSED_WITHIN,
        )
    assert result.returncode == 1, result.stdout[-2000:]
    assert result.stderr.splitlines()[-1] == (
        f"trioshop cluster: port {port} (127.0.0.1:{port}) is in use by another program: "
        "stop it, or give the cluster another --bind"
    )
    assert not event_pattern(events.PROXY_STARTED).search(result.stdout)
    assert "Traceback" not in result.stderr + result.stdout
