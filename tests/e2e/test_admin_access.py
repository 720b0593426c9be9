"""End to end on `trioshop run`: who the client is (X-Forwarded-For from a trusted proxy only),
cross-site and rebound admin requests, JSON bodies' content type, encoded slashes, empty tokens."""

from __future__ import annotations

import re
import socket

import httpx
import pytest

from tests.helpers import REGISTRY_DIR, run_trioshop
from trioshop import events
from trioshop.logs import event_field, event_pattern
from trioshop.testing.server import ServerProcess, running_server

ADMIN = "/api/admin/processes"
RELOAD = "/api/admin/registry/reload"
TOKEN = "s3cret-admin-token-for-tests"
SPOOFED = "203.0.113.7"
JSON_ONLY = {"Accept": "application/json"}


def access_client(server: ServerProcess, path: str) -> str:
    """The ``client`` of the server's latest access-log line for *path*."""
    pattern = event_pattern(events.REQUEST, rf" .*path={re.escape(path)} .*client=(\S+)")
    server.wait_for_line(pattern)
    return [m.group(1) for line in server.lines if (m := pattern.search(line))][-1]


def raw_request(server: ServerProcess, method: str, target: str) -> tuple[int, bytes]:
    """Send *target* byte for byte (no client library normalises it); the status and body."""
    with socket.create_connection(server.address, timeout=10) as conn:
        conn.sendall(
            f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() -> None:
    """Without --trusted-proxy, a client's X-Forwarded-For neither locks it out nor is logged."""
    with running_server("--memory") as server, httpx.Client(
        base_url=server.base_url, timeout=10
    ) as http:
        assert http.get(ADMIN, headers={"X-Forwarded-For": SPOOFED}).status_code == 200
        assert access_client(server, ADMIN) == "127.0.0.1"


def test_forwarded_for_from_a_trusted_proxy_is_the_client() -> None:
    """Behind a trusted proxy, the forwarded address decides admin access and is logged."""
    with running_server("--memory", "--trusted-proxy", "127.0.0.1") as server, httpx.Client(
        base_url=server.base_url, timeout=10, headers=JSON_ONLY
    ) as http:
        for path in (ADMIN, "/ops", "/ops/stream"):
            refused = http.get(path, headers={"X-Forwarded-For": SPOOFED})
            assert refused.status_code == 403, path
            assert "loopback" in refused.json()["error"]
        assert access_client(server, ADMIN) == SPOOFED
        assert http.get(ADMIN, headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200
        assert http.get(ADMIN).status_code == 200  # the proxy itself, on loopback


def test_cross_site_admin_posts_are_refused() -> None:
    """A POST to an admin route or the ops sign-in from another site's page is a JSON 403."""
    with running_server("--memory", env={"TRIOSHOP_ADMIN_TOKEN": TOKEN}) as server, httpx.Client(
        base_url=server.base_url, timeout=10, headers=JSON_ONLY
    ) as http:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        evil = {"Origin": "http://evil.example"}
        refused = http.post(RELOAD, headers={**bearer, **evil})
        assert refused.status_code == 403
        assert "Origin" in refused.json()["error"]
        signin = http.post("/ops/session", data={"token": TOKEN}, headers=evil)
        assert signin.status_code == 403
        assert "trioshop_ops" not in signin.headers.get("set-cookie", "")
        own = {"Origin": server.base_url}
        assert http.post(RELOAD, headers={**bearer, **own}).status_code == 200
        assert http.post(RELOAD, headers=bearer).status_code == 200  # curl sends no Origin


def test_loopback_mode_refuses_foreign_host_names() -> None:
    """Without a token, an admin or ops request naming a non-loopback host (DNS rebinding)
    is a JSON 403; localhost, 127.0.0.1 and [::1] with any port pass."""
    with running_server("--memory") as server, httpx.Client(
        base_url=server.base_url, timeout=10, headers=JSON_ONLY
    ) as http:
        for path in (ADMIN, "/ops", "/ops/stream"):
            refused = http.get(path, headers={"Host": "evil.example:8080"})
            assert refused.status_code == 403, path
            assert "Host" in refused.json()["error"]
        for host in ("localhost", "localhost:8080", "127.0.0.1:9", "[::1]:8080"):
            assert http.get(ADMIN, headers={"Host": host}).status_code == 200, host
        posted = http.post(RELOAD, headers={"Origin": "http://evil.example"})
        assert posted.status_code == 403


def test_json_bodies_need_the_json_content_type() -> None:
    """An add sent as a form (curl -d) is a JSON 415 saying which header to send; nothing
    changes."""
    with running_server("--memory") as server, httpx.Client(
        base_url=server.base_url, timeout=10
    ) as http:
        body = b'{"sku": "KB-002", "quantity": 1}'
        for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
            headers = {"Content-Type": content_type} if content_type else {}
            refused = http.post("/api/cart/alice/items", content=body, headers=headers)
            assert refused.status_code == 415, content_type
            assert "Content-Type: application/json" in refused.json()["error"]
        assert http.get("/api/cart/alice").json()["items"] == []
        typed = {"Content-Type": "application/json; charset=utf-8"}
        added = http.post("/api/cart/alice/items", content=body, headers=typed)
        assert added.status_code == 200


@pytest.mark.parametrize("slash", ["%2F", "%2f"])
def test_an_encoded_slash_is_a_404_not_another_route(slash: str) -> None:
    """``/api/cart/a%2Fitems/KB-002`` is a JSON 404: it never removes user a's line."""
    with running_server("--memory") as server, httpx.Client(
        base_url=server.base_url, timeout=10
    ) as http:
        assert http.post("/api/cart/a/items", json={"sku": "KB-002"}).status_code == 200
        for method, target in [
            ("DELETE", f"/api/cart/a{slash}items/KB-002"),
            ("GET", f"/api/cart/a{slash}b"),
            ("GET", f"/api/users/a{slash}x/orders"),
        ]:
            status, body = raw_request(server, method, target)
            assert status == 404, target
            assert b'"error"' in body, target
        assert [line["sku"] for line in http.get("/api/cart/a").json()["items"]] == ["KB-002"]


@pytest.mark.parametrize("command", ["run", "cluster"])
def test_an_empty_admin_token_is_an_error(command: str) -> None:
    """``--admin-token ''`` or ``TRIOSHOP_ADMIN_TOKEN=`` exits 2 with one line, not "no token"."""
    where = ["--registry", str(REGISTRY_DIR), "--bind", "127.0.0.1:0"]
    if command == "run":
        where.append("--memory")
    given = run_trioshop(command, *where, "--admin-token", "", timeout=30)
    assert given.returncode == 2
    assert len(given.stderr.strip().splitlines()) == 1, given.stderr
    assert "admin token" in given.stderr
    empty = run_trioshop(command, *where, env={"TRIOSHOP_ADMIN_TOKEN": ""}, timeout=30)
    assert empty.returncode == 2
    assert len(empty.stderr.strip().splitlines()) == 1, empty.stderr
    assert "TRIOSHOP_ADMIN_TOKEN" in empty.stderr
    assert event_field(events.LISTENING) not in given.stdout + empty.stdout
