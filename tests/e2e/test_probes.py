"""End to end: storms of hostile probes get 4xx answers and leave the real server serving."""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import REGISTRY_DIR
from trioshop import events
from trioshop.logs import event_pattern
from trioshop.testing.server import ServerProcess, running_server

ADMIN_TOKEN = "probe-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXPLODING_MODULE = "probe_explodes_at_import"
ADD_PATH = "/api/cart/prober/items"
ACCESS_5XX = event_pattern(events.REQUEST, r" .* status=5\d\d ")
STORM_GROWTH_LIMIT = 10_000


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the shipped registry, holding a module that raises at import."""
    folder = tmp_path_factory.mktemp("probes") / "registry"
    shutil.copytree(REGISTRY_DIR, folder)
    (folder / f"{EXPLODING_MODULE}.py").write_text("raise RuntimeError('boom at import')\n")
    return folder


@pytest.fixture(scope="module")
def server(registry: Path) -> Iterator[ServerProcess]:
    """One real server for every probe; at the end it must stop cleanly with a clean log."""
    env = {"PYTHONPATH": os.pathsep.join([str(registry), os.environ.get("PYTHONPATH", "")])}
    with running_server(
        "--registry", str(registry), "--memory", "--admin-token", ADMIN_TOKEN, env=env,
    ) as process:
        yield process
        assert process.terminate() == 0
        assert_clean_log(process)


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client of the server."""
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def assert_clean_log(server: ServerProcess) -> None:
    """No traceback, no 5xx access line and no raw control character in the whole output."""
    output = server.output()
    assert "Traceback" not in output
    assert not [line for line in output.splitlines() if ACCESS_5XX.search(line)]
    assert all(line.isprintable() for line in output.splitlines())


def assert_still_serving(server: ServerProcess, http: httpx.Client, user: str) -> None:
    """The seed's add, view and checkout work, /healthz is 200, and the log stays clean."""
    for sku, quantity in [("LAPTOP-001", 1), ("KB-002", 2)]:
        added = http.post(f"/api/cart/{user}/items", json={"sku": sku, "quantity": quantity})
        assert added.status_code == 200, added.text
    assert http.get(f"/api/cart/{user}").json()["total"] == 1799.97
    assert http.post(f"/api/cart/{user}/checkout").status_code == 200
    assert http.get("/healthz").status_code == 200
    assert server.process is not None and server.process.poll() is None
    assert_clean_log(server)


def assert_error(response: httpx.Response, status: int) -> None:
    """*response* is the JSON error answer with *status*."""
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]


def send_raw(server: ServerProcess, data: bytes) -> bytes:
    """Send *data* on a fresh connection and read until the server closes it."""
    with socket.create_connection(server.address, timeout=10) as client:
        client.sendall(data)
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    return received


def test_out_of_bounds_registry_reloads_are_refused(
    server: ServerProcess, http: httpx.Client, registry: Path
) -> None:
    """Huge stock, sub-cent price, '/' in a SKU, a module raising at import: each reload 422."""
    catalog = http.get("/api/products").json()
    version = http.get("/api/admin/registry", headers=ADMIN).json()["version"]
    edits = [
        ("products.yaml", "stock: 50", f"stock: {10**20}", "app:product.laptop"),
        ("products.yaml", "price: 149.99", "price: 1.005", "app:product.keyboard"),
        ("products.yaml", "sku: MOUSE-003", "sku: MOUSE/003", "app:product.mouse"),
        ("processes.yaml", "trioshop.shop.notifier:run", f"{EXPLODING_MODULE}:run",
         "boom at import"),
    ]
    for file, old, new, named in edits:
        path = registry / file
        original = path.read_text()
        path.write_text(original.replace(old, new))
        try:
            refused = http.post("/api/admin/registry/reload", headers=ADMIN)
        finally:
            path.write_text(original)
        assert_error(refused, 422)
        assert named in refused.json()["error"]
        assert http.get("/api/products").json() == catalog
        assert http.get("/api/admin/registry", headers=ADMIN).json()["version"] == version
    assert_still_serving(server, http, "after-reloads")


def test_random_methods_and_paths_never_become_metric_labels(
    server: ServerProcess, http: httpx.Client
) -> None:
    """300 requests with made-up methods and paths: /metrics grows little and names none."""
    rng = random.Random(20240601)

    def word(alphabet: str) -> str:
        return "".join(rng.choices(alphabet, k=rng.randint(8, 12)))

    before = http.get("/metrics").text
    sent: set[str] = set()
    for n in range(300):
        method = ["PURGE", "FOO", "PROPFIND", "BREW"][n] if n < 4 else word(string.ascii_uppercase)
        segment = word(string.ascii_lowercase)
        path = rng.choice([f"/{segment}/{n}", f"/api/{segment}", f"/api/cart/{segment}"])
        sent |= {method, segment}
        status = http.request(method, path).status_code
        assert 400 <= status < 500, (method, path, status)
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    # Labels bounded by fixed sets: the storm adds a few series (about 4 KB), where a label per
    # request would add one histogram (about 2 KB) per request.
    assert len(metrics.text) - len(before) < STORM_GROWTH_LIMIT
    methods = set(re.findall(r'_total\{[^}]*method="([^"]+)"', metrics.text))
    assert "other" in methods
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}
    assert not [label for label in sent if label in metrics.text]
    assert_still_serving(server, http, "after-methods")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'[{"sku": "KB-002"}]', 400),
        (b'{"sku": "KB-002", "quantity": true}', 400),
        (b'{"sku": "KB-002", "quantity": 1.5}', 400),
        (b'{"sku": "KB-002", "quantity": "2"}', 400),
        (b'{"sku": "KB-002", "quantity": 0}', 400),
        (b'{"sku": "KB-002", "quantity": 1001}', 400),
        (b'{"sku": "KB-002", "quantity": ' + b"9" * 400 + b"}", 400),
        (b'{"sku": "KB-002", "quantity": ' + b"9" * 5000 + b"}", 400),
        (b'{"sku": "KB-002", "quantity": 1e400}', 400),
        (b'{"sku": "KB-002", "pad": "' + b"x" * 70_000 + b'"}', 413),
        (b'{"sku": "NO-SUCH-SKU"}', 404),
    ],
    ids=[
        "invalid-json", "json-array", "bool", "float", "string", "zero", "over-max", "huge",
        "over-int-digit-limit", "infinite", "70kb", "unknown-sku",
    ],
)
def test_bad_add_bodies_are_refused(
    server: ServerProcess, http: httpx.Client, body: bytes, status: int
) -> None:
    """Each malformed or out-of-range add body gets its documented 4xx and adds nothing."""
    response = http.post(ADD_PATH, content=body, headers={"Content-Type": "application/json"})
    assert_error(response, status)
    assert http.get("/api/cart/prober").json()["items"] == []


def test_bad_ids_paths_methods_and_headers_are_refused(
    server: ServerProcess, http: httpx.Client
) -> None:
    """Bad user ids, an empty path segment, a wrong method, control characters in headers."""
    item = {"sku": "KB-002"}
    for user in ["evil%01", "evil%1B%5B31m%0D%0Ainjected", "a" * 65, "%00"]:
        assert_error(http.post(f"/api/cart/{user}/items", json=item), 400)
        assert_error(http.get(f"/api/cart/{user}"), 400)
    assert_error(http.post("/api/cart/a%2Fb/items", json=item), 404)
    assert_error(http.get("/api//products"), 404)
    wrong_method = http.put("/api/products")
    assert_error(wrong_method, 405)
    assert "GET" in wrong_method.headers["Allow"]

    # httpx refuses to send control characters in a header value, so these go raw.
    answer = send_raw(
        server, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-ID: id\x1b[31m\x07\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"\x1b" not in answer
    answer = send_raw(
        server, b"POST " + ADD_PATH.encode() + b" HTTP/1.1\r\nHost: t\r\n"
        b"Idempotency-Key: key\x1b[2J\r\nContent-Length: 17\r\nConnection: close\r\n\r\n"
        b'{"sku": "KB-002"}',
    )
    assert answer.startswith(b"HTTP/1.1 400")
    assert http.get("/api/cart/prober").json()["items"] == []
    assert_still_serving(server, http, "after-ids")


def test_idempotency_keys_repeat_once_and_bound_their_length(
    server: ServerProcess, http: httpx.Client
) -> None:
    """A repeated key answers the same and adds once; a 300-character key is a 400."""
    add: dict[str, Any] = {"json": {"sku": "MOUSE-003"}, "headers": {"Idempotency-Key": "k-1"}}
    first = http.post("/api/cart/keyed/items", **add)
    again = http.post("/api/cart/keyed/items", **add)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert [i["quantity"] for i in http.get("/api/cart/keyed").json()["items"]] == [1]

    long_key = {"Idempotency-Key": "k" * 300}
    assert_error(http.post("/api/cart/keyed/items", json={"sku": "KB-002"}, headers=long_key), 400)
    assert_error(http.post("/api/cart/keyed/checkout", headers=long_key), 400)
    assert [i["sku"] for i in http.get("/api/cart/keyed").json()["items"]] == ["MOUSE-003"]
    assert_still_serving(server, http, "after-keys")


def test_raw_socket_garbage_is_answered_by_hypercorn(
    server: ServerProcess, http: httpx.Client
) -> None:
    """A malformed request line, oversized headers and half a request leave the server up."""
    assert send_raw(server, b"GARBAGE \x00\x01 NOT-HTTP\r\n\r\n").startswith(b"HTTP/1.1 400")
    huge_header = b"X-Probe: " + b"a" * 100_000 + b"\r\n"
    answer = send_raw(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + huge_header + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431")

    for half in [
        b"GET /api/prod",
        b"POST " + ADD_PATH.encode() + b' HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{"sku',
    ]:
        with socket.create_connection(server.address, timeout=10) as client:
            client.sendall(half)
    assert http.get("/api/cart/prober").json()["items"] == []
    assert_still_serving(server, http, "after-garbage")
