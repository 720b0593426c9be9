"""`trioshop cluster` as clients meet it: admin and ops closed to remote clients, a token kept
out of the process list, routing by the registry's prefix, and JSON when no node is ready."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import required
from tests.postgres import fresh_schema
from trioshop import events
from trioshop.logs import event_pattern
from trioshop.testing.server import ClusterProcess, free_port, running_cluster, wait_for_count

ADMIN = "/api/admin/processes"
TOKEN = "cluster-admin-token-for-tests"
JSON_ONLY = {"Accept": "application/json"}
# HAProxy's own line once its checks took every node out.
NO_SERVER = re.compile(r"backend '?nodes'? has no server available")


def outward_address() -> str:
    """This machine's address on its outward interface (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))
        address: str = probe.getsockname()[0]
    if address.startswith("127."):
        required("this machine has no non-loopback IPv4 address to test a remote client with")
    return address


@pytest.fixture(scope="module")
def open_cluster(ample_registry: Path) -> Iterator[ClusterProcess]:
    """Two nodes without an admin token, the proxy on every interface."""
    with fresh_schema() as database, running_cluster(
        "--nodes", "2", "--database", database, "--bind", f"0.0.0.0:{free_port()}",
        "--registry", str(ample_registry),
    ) as cluster:
        yield cluster
        assert cluster.terminate() == 0


def test_remote_clients_cannot_reach_admin_or_ops(open_cluster: ClusterProcess) -> None:
    """Through the proxy, a client from another address gets 403 on the admin API, /ops and
    /ops/stream (a forged X-Forwarded-For does not help), and the nodes log its address."""
    address = outward_address()
    port = open_cluster.address[1]
    with httpx.Client(base_url=f"http://{address}:{port}", timeout=10, headers=JSON_ONLY) as http:
        for path in (ADMIN, "/ops", "/ops/stream"):
            for forged in ({}, {"X-Forwarded-For": "127.0.0.1"}):
                refused = http.get(path, headers=forged)
                assert refused.status_code == 403, (path, forged)
                assert refused.headers["content-type"] == "application/json"
        assert http.get("/api/products").status_code == 200
    open_cluster.wait_for_line(
        event_pattern(
            events.REQUEST, rf" .*path={ADMIN} status=403 .*client={re.escape(address)} "
        )
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as local:
        assert local.get(ADMIN, headers={"X-Forwarded-For": "192.0.2.9"}).status_code == 200


@pytest.fixture
def prefixed_registry(ample_registry: Path, tmp_path: Path) -> Path:
    """The ample registry with its API under ``/shop/v1`` instead of ``/api``."""
    folder = tmp_path / "registry"
    shutil.copytree(ample_registry, folder)
    index = folder / "_index.yaml"
    index.write_text(index.read_text().replace("prefix: /api", "prefix: /shop/v1"))
    return folder


def test_token_cluster_routes_by_the_registry_prefix(
    prefixed_registry: Path, tmp_path: Path
) -> None:
    """With --admin-token-file, admin needs the token even from loopback and the token is on
    no command line; with the API under /shop/v1, users still spread over the nodes."""
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    with fresh_schema() as database, running_cluster(
        "--nodes", "2", "--database", database, "--bind", f"127.0.0.1:{free_port()}",
        "--registry", str(prefixed_registry), "--admin-token-file", str(token_file),
    ) as cluster, httpx.Client(base_url=cluster.base_url, timeout=10) as http:
        assert http.get("/shop/v1/admin/processes").status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert http.get("/shop/v1/admin/processes", headers=bearer).status_code == 200
        for node in ("n1", "n2"):
            command_line = Path(f"/proc/{cluster.node_pid(node)}/cmdline").read_bytes()
            assert TOKEN.encode() not in command_line
        served: dict[str, str] = {}
        for n in range(40):
            user = f"spread{n}"
            added = http.post(f"/shop/v1/cart/{user}/items", json={"sku": "KB-002"})
            assert added.status_code == 200
            served[user] = added.headers["X-Served-By"]
            again = http.get(f"/shop/v1/cart/{user}")
            assert again.headers["X-Served-By"] == served[user]
        assert set(served.values()) == {"n1", "n2"}
        assert cluster.terminate() == 0


def test_no_ready_node_is_a_json_503(ample_registry: Path) -> None:
    """When every node fails its checks, the proxy answers the API's JSON 503 with
    Retry-After, not its own HTML page."""
    with fresh_schema() as database, running_cluster(
        "--nodes", "2", "--database", database, "--bind", f"127.0.0.1:{free_port()}",
        "--registry", str(ample_registry),
    ) as cluster:
        pids = [cluster.node_pid(node) for node in ("n1", "n2")]
        cluster.drain()
        seen = sum(1 for line in cluster.lines if NO_SERVER.search(line))  # at startup, if any
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)  # alive, but no check is answered
            wait_for_count([cluster], NO_SERVER, seen + 1, timeout=60)
            with httpx.Client(base_url=cluster.base_url, timeout=10) as http:
                answer = http.get("/api/cart/alice")
            assert answer.status_code == 503
            assert "X-Served-By" not in answer.headers  # the proxy's answer, not a node's
            assert answer.headers["content-type"] == "application/json"
            assert int(answer.headers["Retry-After"]) >= 1
            assert set(answer.json()) == {"error"}
            assert "retry" in answer.json()["error"]
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        assert cluster.terminate() == 0
