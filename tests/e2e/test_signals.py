"""The real server under signals: a second Ctrl-C ends a slow shutdown, idle clients none."""

from __future__ import annotations

import signal
import socket
import time

from trioshop import events
from trioshop.config import Settings
from trioshop.logs import event_pattern
from trioshop.testing.server import running_server


def test_second_interrupt_exits_at_once_without_traceback() -> None:
    """SIGINT starts a graceful shutdown; a second SIGINT ends it: exit 130, one line, no trace."""
    with running_server("--memory") as server:
        # A request whose body never comes holds the graceful shutdown for its full 5 s (an idle
        # keep-alive connection would not: hypercorn closes those as soon as shutdown starts).
        # The 100 Continue proves the server has the request in hand before the first signal.
        with socket.create_connection(server.address, timeout=10) as slow:
            slow.sendall(
                b"POST /api/cart/alice/items HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += slow.recv(1024)
            assert answer.startswith(b"HTTP/1.1 100")
            assert server.process is not None
            server.process.send_signal(signal.SIGINT)
            server.wait_for_line(event_pattern(events.SHUTDOWN_REQUESTED))
            server.process.send_signal(signal.SIGINT)
            code = server.process.wait(timeout=30)
        output = server.output()
    assert code == 130
    assert "interrupted before the graceful shutdown finished" in output
    assert "Traceback" not in output


def test_idle_keep_alive_client_does_not_hold_the_shutdown() -> None:
    """SIGTERM closes an idle keep-alive connection at once: exit 0 before the drain deadline."""
    drain_deadline = Settings().shutdown_timeout
    with running_server("--memory", "--connection-idle", "60") as server:
        with socket.create_connection(server.address, timeout=30) as idle:
            idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}\n'):
                answer += idle.recv(1024)
            assert server.process is not None
            asked = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            assert idle.recv(1024) == b""  # closed, not left to the drain deadline
            code = server.process.wait(timeout=30)
        took = time.monotonic() - asked
    assert code == 0
    assert took < drain_deadline, f"the exit waited {took:.1f} s for an idle connection"
