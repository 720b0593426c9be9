"""End to end: the real server closes a connection right after an answer that ends it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.helpers import REGISTRY_DIR
from trioshop.testing.server import ServerProcess, running_server

# Far below the server's --connection-idle 30: only an immediate close meets it.
CLOSE_WITHIN = 3.0
HEALTHZ_BODY = b'{"status":"ok"}\n'


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server(
        "--registry", str(REGISTRY_DIR), "--memory", "--connection-idle", "30"
    ) as process:
        yield process
        assert process.terminate() == 0


def _connect(server: ServerProcess) -> socket.socket:
    client = socket.create_connection(server.address, timeout=CLOSE_WITHIN)
    client.settimeout(CLOSE_WITHIN)  # every recv fails with TimeoutError past this
    return client


def _read_until_closed(client: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (recv returns b"")."""
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


def _read_answer(client: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One answer framed by Content-Length: (head, body, bytes read past it)."""
    received = buffered
    while b"\r\n\r\n" not in received:
        chunk = client.recv(65536)
        assert chunk, f"connection closed mid-answer: {received!r}"
        received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    lengths = [
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")[1:]
        if line.split(b":", 1)[0].strip().lower() == b"content-length"
    ]
    assert lengths, f"no content-length in {head!r}"
    while len(rest) < lengths[0]:
        chunk = client.recv(65536)
        assert chunk, f"connection closed mid-body: {head!r}"
        rest += chunk
    return head, rest[: lengths[0]], rest[lengths[0] :]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    ],
    ids=["http-1.0", "connection-close"],
)
def test_closing_request_is_closed_after_the_answer(
    server: ServerProcess, request_bytes: bytes
) -> None:
    """An HTTP/1.0 or a Connection: close request: its answer, then EOF at once (no idle wait)."""
    with _connect(server) as client:
        client.sendall(request_bytes)
        answer = _read_until_closed(client)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(HEALTHZ_BODY)


def test_keep_alive_connection_serves_a_second_request(server: ServerProcess) -> None:
    """A plain HTTP/1.1 connection stays open after the answer and serves a second request."""
    with _connect(server) as client:
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n")
        head, body, extra = _read_answer(client)
        assert head.startswith(b"HTTP/1.1 200") and body == HEALTHZ_BODY and extra == b""
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n")
        head, body, extra = _read_answer(client)
        assert head.startswith(b"HTTP/1.1 200") and body == HEALTHZ_BODY and extra == b""


def test_answer_before_the_request_body_is_closed(server: ServerProcess) -> None:
    """A 413 answered before the announced body has arrived is followed by EOF at once."""
    with _connect(server) as client:
        client.sendall(
            b"POST /api/cart/alice/items HTTP/1.1\r\nHost: shop\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{"
        )
        answer = _read_until_closed(client)
    assert answer.startswith(b"HTTP/1.1 413")
