"""The real server under signals: a second Ctrl-C during a slow shutdown exits without a trace."""

from __future__ import annotations

import re
import signal
import socket

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
            server.wait_for_line(re.compile(r"event=\"shutdown requested\""))
            server.process.send_signal(signal.SIGINT)
            code = server.process.wait(timeout=30)
        output = server.output()
    assert code == 130
    assert "interrupted before the graceful shutdown finished" in output
    assert "Traceback" not in output
