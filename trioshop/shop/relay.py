"""The orders relay: the registry's ``relay`` service publishes every order to a Redis stream."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from trioshop import events
from trioshop.domain import Order
from trioshop.domain.money import to_json_number
from trioshop.logs import log_event
from trioshop.runtime.restart import RestartBackoff
from trioshop.shop.services import ServiceContext, consume_orders

logger = logging.getLogger("trioshop.relay")

# The entry's layout; a consumer reads ``schema`` first and refuses a version it does not know.
SCHEMA_VERSION = "1"
# One XADD (connecting included) that has not answered within this is given up and retried:
# a Redis that hangs (stopped, swapping) holds the relay, never a checkout.
PUBLISH_TIMEOUT_SECONDS = 2.0
# Between tries while Redis does not answer: doubling from 0.2 s to a 5 s cap (the
# runtime's one backoff rule, without jitter: one relay per node).
RETRY = RestartBackoff(initial_delay=0.2, max_delay=5.0, jitter=0.0)
# The status the outbox records for an order Redis acknowledged.
PUBLISHED = "published"
# The error replies that mean "not now" (loading its data, busy with a script, a replica,
# out of memory, a cluster moving slots or without its primary): waited out like an outage.
# Any other reply (WRONGTYPE: the stream's name holds another type; ERR ...) is an error
# that retrying cannot mend.
TRANSIENT_REPLIES = frozenset(
    {"LOADING", "BUSY", "READONLY", "OOM", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"}
)


def is_outage(error: Exception) -> bool:
    """Whether *error*, raised by an XADD, means Redis cannot take it now: no answer
    (``OSError``, ``trio.TooSlowError``), a lost connection, or a reply of
    :data:`TRANSIENT_REPLIES`. False for every other error reply: the relay crashes on it."""
    from coredis.exceptions import (
        ClusterDownError,
        ConnectionError,
        ReadOnlyError,
        RedisError,
        TryAgainError,
    )

    if not isinstance(error, RedisError):
        return True
    # coredis drops the code of the replies it has a class for, and keeps the others'.
    return isinstance(
        error, (ConnectionError, ReadOnlyError, TryAgainError, ClusterDownError)
    ) or str(error).split(" ", 1)[0] in TRANSIENT_REPLIES


def stream_entry(order: Order) -> dict[str, str]:
    """The stream entry of *order*, the one place its fields are written:

    - ``order_id``: the event's id; the same order may come twice (at least once), so
      consumers de-duplicate by it;
    - ``user_id``: the ordering key: one user's orders are added in the order they were placed;
    - ``schema``: :data:`SCHEMA_VERSION`;
    - ``order``: JSON ``{"items": [{"sku", "title", "price", "quantity"}], "total",
      "timestamp"}``, amounts as the HTTP API writes them (``1799.97``), timestamp in unix
      seconds.
    """
    body = {
        "items": [
            {"sku": line.sku, "title": line.title, "price": to_json_number(line.price_cents),
             "quantity": line.quantity}
            for line in order.lines
        ],
        "total": to_json_number(order.total_cents),
        "timestamp": order.timestamp,
    }
    return {
        "order_id": order.order_id,
        "user_id": order.user_id,
        "schema": SCHEMA_VERSION,
        "order": json.dumps(body, separators=(",", ":")),
    }


@attrs.define
class _Relay:
    """Publishes orders with *xadd*; remembers whether Redis is down, to log an outage once.

    *failures* are the exceptions that mean "Redis did not take it": the client's errors,
    ``OSError`` and ``trio.TooSlowError`` (no answer within ``PUBLISH_TIMEOUT_SECONDS``);
    :func:`is_outage` tells which of them are retried.
    """

    _xadd: Callable[[dict[str, str]], Awaitable[object]]
    _failures: tuple[type[Exception], ...]
    _stream: str
    _outage: str | None = None

    async def publish(self, ctx: ServiceContext, order: Order) -> str:
        """XADD *order*'s entry and return once Redis acknowledged it (``published``).

        While Redis cannot take it (refused, timed out, a transient reply: :func:`is_outage`)
        it tries again with a capped backoff: the order waits in the outbox, this service
        does not crash (an outage must not use up its restarts), and the orders after it
        wait behind it, so one user's orders are published in order. The outbox loop cancels
        the tries when the order's claim nears its end (a shared store), and takes it again.
        Any other error reply is raised: the service crashes, and the supervisor restarts it
        with backoff, then marks it failed (``/healthz``) if the error stays.
        """
        attempt = 1
        while True:
            try:
                with trio.fail_after(PUBLISH_TIMEOUT_SECONDS):
                    await self._xadd(stream_entry(order))
            except self._failures as exc:
                if not is_outage(exc):
                    raise
                delay = RETRY.delay(attempt)
                self._down(exc, delay)
                await trio.sleep(delay)
                attempt += 1
                continue
            if self._outage is not None:
                log_event(logger, events.RELAY_PUBLISHING_AGAIN, service=ctx.name,
                          stream=self._stream, after=self._outage)
                self._outage = None
            return PUBLISHED

    def _down(self, error: Exception, delay: float) -> None:
        """Log the outage's start, once, with its reason."""
        if self._outage is not None:
            return
        reason = (
            f"no answer within {PUBLISH_TIMEOUT_SECONDS}s" if isinstance(error, trio.TooSlowError)
            else f"{type(error).__name__}: {error}"
        )
        self._outage = reason
        log_event(logger, events.RELAY_WAITING, logging.WARNING, stream=self._stream, error=reason,
                  retry_in=delay, retry_max=RETRY.max_delay)


async def run(ctx: ServiceContext, *, task_status: trio.TaskStatus[None]) -> None:
    """The registry's ``relay`` service: publish every order to ``settings.events_stream``
    on ``settings.events_redis``, trimmed to about ``settings.events_maxlen`` entries.

    Ready as soon as it listens for orders; it connects on the first order, so a Redis that
    is down at start is waited for like any outage. Raises ``ValueError`` when
    ``events_redis`` is not set (the registry's ``enabled_by`` keeps it from starting then).
    """
    # Imported here, once, as the relay starts: a shop without the relay (the default) does
    # not load coredis (~0.25 s of CPU at each start and `trioshop check`).
    import coredis
    from coredis.exceptions import RedisError
    from coredis.tokens import PureToken

    settings = ctx.settings
    # coredis logs a traceback for every connection attempt that fails; the relay logs an
    # outage once, with its reason (its own failures still show at CRITICAL).
    logging.getLogger("coredis").setLevel(logging.CRITICAL)
    if settings.events_redis is None:
        raise ValueError("the relay needs a Redis URL: pass --events-redis redis://HOST:PORT/DB")
    client: coredis.Redis[str] = coredis.Redis.from_url(
        settings.events_redis, decode_responses=True, connect_timeout=PUBLISH_TIMEOUT_SECONDS,
        stream_timeout=PUBLISH_TIMEOUT_SECONDS,
    )
    stream, maxlen = settings.events_stream, settings.events_maxlen

    async def xadd(fields: dict[str, str]) -> object:
        return await client.xadd(
            stream, fields, trim_strategy=PureToken.MAXLEN, threshold=maxlen,
            trim_operator=PureToken.APPROXIMATELY,
        )

    relay = _Relay(xadd, (RedisError, OSError, trio.TooSlowError), stream)
    async with client:
        await consume_orders(ctx, relay.publish, task_status=task_status)
