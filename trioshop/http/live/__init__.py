"""The node at work, live: a hub of recent events, the feed that fills it, and its SSE stream."""

from trioshop.http.live.access import OPS_COOKIE, OPS_COOKIE_PATH, check_ops_access
from trioshop.http.live.feed import LiveFeed, LiveLogHandler
from trioshop.http.live.hub import HubFull, LiveHub, Viewer
from trioshop.http.live.rates import RequestWindow
from trioshop.http.live.stream import live_routes, stream_seconds

__all__ = [
    "OPS_COOKIE",
    "OPS_COOKIE_PATH",
    "HubFull",
    "LiveFeed",
    "LiveHub",
    "LiveLogHandler",
    "RequestWindow",
    "Viewer",
    "check_ops_access",
    "live_routes",
    "stream_seconds",
]
