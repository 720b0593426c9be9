"""An ASGI wrapper that keeps quart-trio's cancellation out of hypercorn's bookkeeping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Loose on purpose: frameworks type their scope and messages more narrowly than each other.
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def shield_sends(app: ASGIApp) -> ASGIApp:
    """Run *app* with every HTTP ``send`` shielded from the app's own cancellation.

    Why: quart-trio answers a request in a nursery and cancels that nursery as soon as the
    server reports the client done, which can land while hypercorn is still inside the
    response's final ``send`` arming the connection's keep-alive timer. The timer is then
    never armed: the idle connection is never closed, and a graceful shutdown waits its
    full ``graceful_timeout`` for it. Hypercorn already shields the socket write itself, so
    the shield adds no new way for a send to hang.
    """

    async def wrapped(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def shielded_send(message: Message) -> None:
            with trio.CancelScope(shield=True):
                await send(message)

        await app(scope, receive, shielded_send)

    return wrapped
