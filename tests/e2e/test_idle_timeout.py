"""The real server's --connection-idle runs only between requests: a slow request is answered."""

from __future__ import annotations

import json
import select
import socket
import sqlite3
import time
from pathlib import Path

import httpx
from hypercorn.config import Config as HypercornConfig

from tests.helpers import REGISTRY_DIR
from trioshop import events
from trioshop.logs import event_pattern
from trioshop.store.sqlite import DATABASE_FILE
from trioshop.testing.server import running_server

IDLE = 1.0  # --connection-idle of these servers
# How long the test holds the database's write lock, the request's handling with it: far past
# IDLE, and well inside SQLite's 5 s busy timeout, after which the write would fail.
HELD_FOR = 2.5 * IDLE
# A wait for an answer or for the server's close: generous, never reached when green.
ANSWER_TIMEOUT = 30.0
# A slowloris client sends one byte of a request head this often, always inside IDLE.
DRIP_EVERY = IDLE / 4


def _read_answer(client: socket.socket) -> tuple[bytes, bytes]:
    """One answer framed by Content-Length: (head, body); fails if the server closes first."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = client.recv(65536)
        assert chunk, f"the server closed the connection before answering: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = client.recv(65536)
        assert chunk, f"the server closed the connection mid-answer: {head!r}"
        body += chunk
    return head, body


def test_request_slower_than_connection_idle_is_answered(tmp_path: Path) -> None:
    """An add held past --connection-idle by a database lock gets its 200, and counts once."""
    with running_server(
        "--registry", str(REGISTRY_DIR), "--data-dir", str(tmp_path),
        "--connection-idle", str(IDLE), "--read-timeout", str(ANSWER_TIMEOUT),
    ) as server:
        locker = sqlite3.connect(tmp_path / DATABASE_FILE, isolation_level=None)
        body = json.dumps({"sku": "KB-002", "quantity": 1}).encode()
        with socket.create_connection(server.address, timeout=ANSWER_TIMEOUT) as client:
            locker.execute("BEGIN IMMEDIATE")  # the cart's write waits for this lock
            client.sendall(
                b"POST /api/cart/alice/items HTTP/1.1\r\nHost: shop\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            # Nothing comes back while the write waits: no answer, and no close at IDLE.
            readable, _, _ = select.select([client], [], [], HELD_FOR)
            assert not readable, "the server answered or closed while the request was handled"
            locker.execute("ROLLBACK")
            head, answer = _read_answer(client)
        locker.close()
        assert head.startswith(b"HTTP/1.1 200"), head + answer
        cart = httpx.get(f"{server.base_url}/api/cart/alice", timeout=ANSWER_TIMEOUT).json()
        assert [(item["sku"], item["quantity"]) for item in cart["items"]] == [("KB-002", 1)]
        assert server.terminate() == 0


def test_idle_deadline_cuts_a_request_head_that_never_completes() -> None:
    """After an answer, a head dripped a byte at a time is cut at --connection-idle."""
    with running_server(
        "--registry", str(REGISTRY_DIR), "--memory", "--connection-idle", str(IDLE)
    ) as server:
        with socket.create_connection(server.address, timeout=ANSWER_TIMEOUT) as client:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n")
            head, _ = _read_answer(client)
            assert head.startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            client.sendall(b"GET /healthz HTTP/1.1\r\n")
            closed = False
            while not closed and time.monotonic() - started < ANSWER_TIMEOUT:
                readable, _, _ = select.select([client], [], [], DRIP_EVERY)
                if readable:
                    try:
                        closed = client.recv(65536) == b""
                    except OSError:  # reset: closed with our last bytes unread
                        closed = True
                else:
                    try:
                        client.sendall(b"X")  # one more byte of a header that never ends
                    except OSError:  # reset: the server has closed it
                        closed = True
            assert closed, "a request head dripping in forever kept its connection"
        assert server.terminate() == 0


def test_connection_hypercorn_ends_after_its_last_request_is_closed() -> None:
    """Past hypercorn's requests-per-connection limit its Connection: close answer is followed
    by EOF at once, though the client keeps its end open (not left open with no deadline)."""
    last = HypercornConfig().keep_alive_max_requests
    with running_server(
        "--registry", str(REGISTRY_DIR), "--memory", "--connection-idle", str(ANSWER_TIMEOUT)
    ) as server:
        with socket.create_connection(server.address, timeout=ANSWER_TIMEOUT / 2) as client:
            for _ in range(last):
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n")
                head, _ = _read_answer(client)
            assert b"connection: close" in head.lower()
            assert client.recv(65536) == b"", "the server kept the connection open"
        assert server.terminate() == 0


# A client that never reads: a receive buffer this small, and enough pipelined requests for
# the server's answers to fill it and the server's send buffer.
NEVER_READ_BUFFER = 1024
PIPELINED_REQUESTS = 2000


def test_a_client_that_never_reads_is_reset_and_does_not_hold_the_shutdown() -> None:
    """A client that takes no bytes for --connection-idle is reset: SIGTERM still exits 0."""
    with running_server(
        "--registry", str(REGISTRY_DIR), "--memory", "--connection-idle", str(IDLE)
    ) as server:
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NEVER_READ_BUFFER)
        client.settimeout(ANSWER_TIMEOUT)
        try:
            client.connect(server.address)
            client.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: shop\r\n\r\n" * PIPELINED_REQUESTS)
            # Answering has begun; the buffers fill and the server's write blocks. Before the
            # send deadline, that write held the graceful shutdown forever.
            server.wait_for_line(event_pattern(events.REQUEST, r" .*path=/openapi.json"))
            assert server.terminate(timeout=ANSWER_TIMEOUT) == 0
        finally:
            client.close()
