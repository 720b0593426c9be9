"""The live feed of one app: log records become hub events; a snapshot goes out every second."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from trioshop import events
from trioshop.domain.money import to_json_number
from trioshop.http.live.hub import LiveHub
from trioshop.http.live.rates import RequestWindow
from trioshop.http.shapes import ACTOR, SERVICE
from trioshop.logs import log_event
from trioshop.runtime import KindStatistics
from trioshop.shop import Shop

logger = logging.getLogger(__name__)

SNAPSHOT_SECONDS = 1.0
ACTORS_SHOWN = 100  # the oldest live actors a snapshot lists (the count is always exact)
WATCHED_LOGGER = "trioshop"
# One line per HTTP request would drown everything else; requests/s come from the metrics.
IGNORED_LOGGERS = frozenset({"trioshop.access"})


def record_event(record: logging.LogRecord) -> dict[str, Any]:
    """A structured log record as a live event: its name (the message) and its fields."""
    fields: dict[str, Any] = record.__dict__.get("fields") or {}
    return {
        "ts": record.created,
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
        "fields": fields,
    }


class LiveLogHandler(logging.Handler):
    """Publishes each trioshop log record to a hub, whichever thread logged it.

    On the Trio thread of the hub's run the record is published at once (no checkpoint, no
    waiting); from any other thread it is handed to that run with ``run_sync_soon``, which
    never blocks, and dropped if that run has finished.
    """

    def __init__(self, hub: LiveHub, token: trio.lowlevel.TrioToken) -> None:
        super().__init__()
        self._hub = hub
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name not in IGNORED_LOGGERS

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = record_event(record)
            try:
                here = trio.lowlevel.current_trio_token() is self._token
            except RuntimeError:  # a worker thread, or no Trio run at all
                here = False
            if here:
                self._hub.publish(event)
            else:
                self._token.run_sync_soon(self._hub.publish, event)
        except trio.RunFinishedError:
            pass
        except Exception:
            self.handleError(record)


def kind_view(kind: KindStatistics) -> dict[str, Any]:
    """One actor kind's row on the ops page: its counts, and the p50/p99 of its mailbox wait
    and handling in seconds, estimated from the histograms' buckets (``None`` before any
    message)."""
    return {
        "kind": kind.kind, "live": kind.live, "messages": kind.messages,
        "activations": kind.activations, "passivations": kind.passivated,
        "mailbox_wait_p50": kind.mailbox_wait.quantile(0.5),
        "mailbox_wait_p99": kind.mailbox_wait.quantile(0.99),
        "handling_p50": kind.handling.quantile(0.5),
        "handling_p99": kind.handling.quantile(0.99),
    }


def snapshot(
    shop: Shop, hub: LiveHub, rates: RequestWindow, node: str | None
) -> dict[str, Any]:
    """What the ops page's tables and counters show, as of now."""
    stats = shop.statistics()
    actors = stats.actors
    return {
        "node": node,
        "at": time.time(),
        "actors": {
            "live": actors.live, "spawned": actors.spawned, "ended": actors.ended,
            "crashed": actors.crashed, "passivated": actors.passivated,
            "timeouts": actors.timeouts, "max_mailbox_depth": actors.max_mailbox_depth,
        },
        "actor_list": [ACTOR.render(info) for info in shop.live_actors(ACTORS_SHOWN)],
        "actor_kinds": [kind_view(kind) for kind in actors.kinds],
        "services": [{"name": s.state.name, **SERVICE.render(s)} for s in stats.services],
        "orders": {
            "checkouts": stats.orders.checkouts,
            "revenue": to_json_number(stats.orders.revenue_cents),
        },
        "bus": {"published": stats.bus.published},
        "requests": rates.view(),
        "live": {"viewers": hub.viewers, "dropped_total": hub.dropped_total},
    }


class LiveFeed:
    """The hub of one app, fed by a log handler while :meth:`run` runs, and its snapshots."""

    def __init__(
        self,
        hub: LiveHub,
        rates: RequestWindow,
        node: str | None,
        stream_seconds: float,
    ) -> None:
        self.hub = hub
        self.rates = rates
        self.node = node
        # How long one stream lasts before the client reconnects (see ``stream.py``).
        self.stream_seconds = stream_seconds
        self._scope = trio.CancelScope()
        self._get_shop: Callable[[], Shop | None] = lambda: None

    def snapshot(self) -> dict[str, Any] | None:
        """The snapshot the stream would send now (no I/O), or ``None`` while no shop runs."""
        shop = self._get_shop()
        return None if shop is None else snapshot(shop, self.hub, self.rates, self.node)

    async def run(
        self,
        get_shop: Callable[[], Shop | None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Feed the hub until :meth:`close`: log records as they come, a snapshot a second;
        every second too, viewers stuck past their deadline are cut (``LiveHub.cut_overdue``).

        Ready once the log handler is attached. On exit the handler is detached and every
        stream ends.
        """
        self._get_shop = get_shop
        handler = LiveLogHandler(self.hub, trio.lowlevel.current_trio_token())
        watched = logging.getLogger(WATCHED_LOGGER)
        watched.addHandler(handler)
        try:
            with self._scope:
                task_status.started()
                tick = trio.current_time()
                while True:
                    for viewer in self.hub.cut_overdue(trio.current_time()):
                        log_event(
                            logger, events.LIVE_VIEWER_CUT, logging.WARNING,
                            reason="still sending past the end of its stream: not reading",
                            buffered=viewer.buffered,
                        )
                    self.rates.sample()
                    now = self.snapshot() if self.hub.viewers else None
                    if now is not None:
                        self.hub.publish_snapshot(now)
                    tick = max(tick + SNAPSHOT_SECONDS, trio.current_time())
                    await trio.sleep_until(tick)
        finally:
            watched.removeHandler(handler)
            self.hub.close()

    def close(self) -> None:
        """Stop feeding and end every stream (the app is shutting down)."""
        self._scope.cancel()
        self.hub.close()
