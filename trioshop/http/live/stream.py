"""``GET /ops/stream``: the node's live events as Server-Sent Events, resumable by id.

A proxy in front may close a connection whose client sends nothing for a while, and an SSE
client sends nothing once its request is made (trioshop's own ``--connection-idle`` runs only
between requests). Each stream therefore ends by itself, within 75 % of ``--connection-idle``
(a ``bye`` event, then the end of the body), and
the browser's EventSource reconnects after ``retry`` milliseconds with ``Last-Event-ID``: the
hub replays every event since that id from its ring, so nothing is lost in between.

A client that stops reading would hold its slot for good (hypercorn's writes cannot be
cancelled, so the stream never reaches its end): the feed cuts every stream still connected
``CUT_AFTER_SECONDS`` past its end, resetting its connection (``trioshop.http.serving``), and
the slot is free at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio
from quart import Blueprint, Response, request

from trioshop.http.errors import ApiError
from trioshop.http.live.access import check_ops_access
from trioshop.http.live.feed import LiveFeed
from trioshop.http.live.hub import HubFull, sse_frame
from trioshop.http.serving import current_connection

RETRY_MS = 1000  # how long EventSource waits before reconnecting
# A stream lasts this share of --connection-idle: it ends cleanly before an idle cut.
STREAM_SHARE_OF_IDLE = 0.75
# A stream still connected this long after its end is stuck (its client does not read): cut.
CUT_AFTER_SECONDS = 1.0


def stream_seconds(connection_idle: float) -> float:
    """How long one stream may last when idle connections are closed after *connection_idle*."""
    return STREAM_SHARE_OF_IDLE * connection_idle


def live_routes(feed: LiveFeed, admin_token: str | None) -> Blueprint:
    """``GET /ops/stream``, guarded like the admin API (header, sign-in cookie, or loopback)."""
    live = Blueprint("live", __name__)

    @live.get("/ops/stream")
    async def stream() -> Response:
        check_ops_access(admin_token)
        hub = feed.hub
        if not hub.room():
            raise ApiError(503, "Too many live viewers, retry shortly", {"Retry-After": "5"})
        last_event_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
        connection = current_connection()
        cut_connection = connection.reset if connection is not None else None

        async def body() -> AsyncIterator[bytes]:
            # Registered here, when the body starts, so that a stream never started leaks no
            # viewer; the slot check above is advisory, connect() may still refuse.
            deadline = trio.current_time() + feed.stream_seconds
            try:
                resume = hub.connect(
                    last_event_id, deadline=deadline + CUT_AFTER_SECONDS, on_cut=cut_connection
                )
            except HubFull:  # full after all, or the hub closed meanwhile
                yield f"retry: {RETRY_MS * 5}\n\n".encode()
                return
            viewer = resume.viewer
            try:
                hello = {
                    "node": feed.node, "epoch": hub.epoch, "position": resume.position,
                    "resumed": last_event_id is not None, "replayed": len(resume.replay),
                    "stream_seconds": feed.stream_seconds, "retry_ms": RETRY_MS,
                }
                head = [f"retry: {RETRY_MS}\n\n".encode()]
                if resume.gap is not None:
                    head.append(sse_frame("gap", resume.gap))
                head.append(sse_frame("hello", hello, resume.event_id))
                head.extend(event.frame() for event in resume.replay)
                yield b"".join(head)
                while not viewer.closed:
                    with trio.move_on_at(deadline):
                        await viewer.wait()
                    if viewer.closed or trio.current_time() >= deadline:
                        break
                    chunk = viewer.drain()
                    if chunk:
                        yield chunk
                yield viewer.drain() + sse_frame("bye", {"reconnect_ms": RETRY_MS})
            finally:
                hub.disconnect(viewer)

        response = Response(body(), content_type="text/event-stream; charset=utf-8")
        response.timeout = None  # ends by itself, before the connection's idle deadline
        response.headers["Cache-Control"] = "no-cache, no-store"
        response.headers["X-Accel-Buffering"] = "no"  # proxies: pass each event on at once
        return response

    return live
