"""Closes a connection right after its last answer, which hypercorn does from inside the app's
final ``send`` (hypercorn/protocol/http_stream.py:247 -> protocol/h11.py:151,289 ->
trio/tcp_server.py:92) after first handing the app ``http.disconnect`` (http_stream.py:132), on
which quart-trio cancels the request nursery (quart_trio/asgi.py:40), so ``send_eof`` in
``TCPServer._close`` (tcp_server.py:119) raises ``Cancelled`` and the socket stays open until
the idle-connection deadline (trioshop/http/serving.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import trio
from hypercorn.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


def _says_close(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether *headers* hold a ``Connection`` header with the ``close`` token (as h11 reads it)."""
    for name, value in headers:
        if name.lower() == b"connection" and b"close" in (
            token.strip() for token in value.lower().split(b",")
        ):
            return True
    return False


class CloseAfterLastAnswer:
    """ASGI middleware: the final ``http.response.body`` of an answer after which the connection
    closes is sent shielded, so hypercorn's close that runs inside that ``send`` completes.

    The connection closes when the request is HTTP/1.0 or says ``Connection: close``, when the
    answer says ``Connection: close``, or when the answer ends before the request body has been
    received (e.g. a 413). Keep-alive answers are passed through unshielded: what follows them
    (re-arming the idle deadline, see trioshop/http/serving.py) needs no checkpoint.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        keep_alive = scope["http_version"] >= "1.1" and not _says_close(scope["headers"])
        request_complete = False

        async def tracked_receive() -> ASGIReceiveEvent:
            nonlocal request_complete
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                request_complete = True
            return message

        async def guarded_send(message: ASGISendEvent) -> None:
            nonlocal keep_alive
            if message["type"] == "http.response.start":
                keep_alive = keep_alive and not _says_close(message.get("headers", ()))
            elif (
                message["type"] == "http.response.body"
                and not message.get("more_body", False)
                and not (keep_alive and request_complete)
            ):
                with trio.CancelScope(shield=True):
                    await send(message)
                return
            await send(message)

        await self.app(scope, tracked_receive, guarded_send)
