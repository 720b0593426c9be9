"""A minimal keep-alive HTTP/1.1 client on trio sockets, fast enough not to be the bottleneck.

httpx on trio costs several hundred microseconds of CPU per request; on a 2-core machine that
shares its cores with the server, that would measure the client. This client does one thing:
send a request on a persistent connection and read a Content-Length framed answer.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import trio


def tally(statuses: Counter[int], socket_errors: int, result: dict[str, Any]) -> dict[str, Any]:
    """Add the answers' status counts (0: no answer) to a load run's *result*: ``statuses``,
    ``non_2xx`` (answers) and ``no_answer``."""
    result["statuses"] = {str(k): v for k, v in sorted(statuses.items()) if k}
    result["non_2xx"] = sum(v for k, v in statuses.items() if k and not 200 <= k < 300)
    result["no_answer"] = statuses.get(0, 0) + socket_errors
    return result


async def timed_workers(worker: Callable[[int], Awaitable[None]], connections: int) -> float:
    """Run *connections* copies of *worker* (each given its number) together; the seconds
    they took, wall clock."""
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for n in range(connections):
            nursery.start_soon(worker, n)
    return time.perf_counter() - started


class HttpError(Exception):
    """The connection failed or the answer was not HTTP/1.1 with a Content-Length."""


class Connection:
    """One keep-alive connection to *base_url*; reconnects once if the server closed it."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._stream: trio.SocketStream | None = None
        self._buffer = b""

    async def _connect(self) -> trio.SocketStream:
        if self._stream is None:
            self._stream = await trio.open_tcp_stream(self.host, self.port)
            self._buffer = b""
        return self._stream

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """Send one request; returns (status, body bytes). Raises HttpError on failure."""
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Length: {len(payload)}\r\n"
            + ("Content-Type: application/json\r\n" if payload else "")
            + "\r\n"
        ).encode()
        for attempt in (1, 2):
            stream = await self._connect()
            try:
                await stream.send_all(head + payload)
                return await self._read_response(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, HttpError, OSError) as exc:
                await self.aclose()
                if attempt == 2:
                    raise HttpError(str(exc) or type(exc).__name__) from exc
        raise AssertionError("unreachable")

    async def _read_response(self, stream: trio.SocketStream) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self._buffer:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise HttpError("connection closed by server")
            self._buffer += chunk
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        while len(rest) < length:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise HttpError("connection closed mid-body")
            rest += chunk
        self._buffer = rest[length:]
        if close:
            await self.aclose()
        return status, rest[:length]
