"""One node's life: its signals, its HTTP serving and its shop, started and stopped in order."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import Sequence

import attrs
import trio
from hypercorn.config import Config as HypercornConfig

from trioshop import events
from trioshop.config import Settings
from trioshop.http import create_app
from trioshop.http.app import ShopLifetime
from trioshop.http.auth import UserAuth
from trioshop.http.serving import quiet_startup_traceback, serve
from trioshop.logs import log_event
from trioshop.registry import Registry, RegistryError
from trioshop.telemetry_sdk import OTLP_EXPORT_TIMEOUT

logger = logging.getLogger("trioshop.server")

# Per request the stack allocates a few hundred container objects; at Python's default (700)
# the young generation is collected every couple of requests.
GC_GEN0_THRESHOLD = 20_000


def hypercorn_config(settings: Settings, bind: str) -> HypercornConfig:
    """hypercorn's configuration for a node listening on *bind* (``HOST:PORT``)."""
    config = HypercornConfig()
    config.bind = [bind]
    config.accesslog = None  # trioshop writes its own access log line per request
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = settings.shutdown_timeout
    config.shutdown_timeout = app_shutdown_seconds(settings)
    # No read deadline of hypercorn's: it would also run while a request is handled.
    # trioshop.http.serving closes connections idle between requests instead.
    config.read_timeout = None
    return config


def app_shutdown_seconds(settings: Settings) -> float:
    """How long the app's lifespan shutdown may take before it is given up on: it waits up to
    ``shutdown_timeout`` for the shop to stop, and as long for its background tasks
    (BACKGROUND_TASK_SHUTDOWN_TIMEOUT)."""
    return 2 * settings.shutdown_timeout


def stop_bound(settings: Settings) -> float:
    """The longest a node run with *settings* takes from SIGTERM to its exit: hypercorn's
    graceful close of connections, the app's shutdown, then the traces' last export (a
    supervisor that kills it sooner cuts the shop's stop short)."""
    return settings.shutdown_timeout + app_shutdown_seconds(settings) + OTLP_EXPORT_TIMEOUT


def bound_address(bind: str, sockets: Sequence[socket.socket]) -> str:
    """*bind* as given, with the port the system chose in place of port 0."""
    host, _, port = bind.rpartition(":")
    if port != "0" or not sockets:
        return bind
    return f"{host}:{sockets[0].getsockname()[1]}"


async def serve_node(
    registry: Registry,
    settings: Settings,
    config: HypercornConfig,
    sockets: list[socket.socket],
    auth: UserAuth | None,
) -> None:
    """Run one node on *sockets* (bound and listening) until SIGINT or SIGTERM.

    The tree of tasks, top to bottom::

        serve_node's nursery
        ├── watch_signals: SIGINT/SIGTERM starts the shutdown (and cancels a reload)
        │   └── Reloads.run: SIGHUP reloads the registry, one reload at a time
        └── serving (trioshop.http.serving.serve)
            └── the app's lifespan: the shop (trioshop.shop.assembly: store, actor host,
                bus, services)
                ├── accepting connections on *sockets*
                └── one task per connection, and its requests

    Ready (``listening`` logged, with the URLs and the OS pid for ``kill -HUP``) once the
    shop started; a failed start raises :class:`~trioshop.http.serving.LifespanFailed` (its
    traceback only logged at DEBUG) before any connection is accepted.

    Shutdown order, on the first SIGINT or SIGTERM: stop accepting, end the ``/ops`` streams
    and close idle connections; requests in flight get ``settings.shutdown_timeout`` seconds;
    then the shop closes (services, bus, actor host, store), the signal watcher ends and
    ``stopped`` is logged. A second signal raises :class:`KeyboardInterrupt` at once.
    """
    app = create_app(registry, settings, auth=auth)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(_watch_signals, shutdown, app.extensions["trioshop"])
        live = app.extensions["trioshop.live"]

        async def stop_serving() -> None:
            await shutdown.wait()
            live.hub.close()  # end /ops streams now: hypercorn would wait for them

        async def serving(*, task_status: trio.TaskStatus[list[str]]) -> None:
            await serve(
                app, config, sockets, idle_timeout=settings.idle_connection_timeout,
                shutdown_trigger=stop_serving, task_status=task_status,
            )
            nursery.cancel_scope.cancel()  # drained: the signal watcher is done too

        with quiet_startup_traceback(app.logger):
            binds = await nursery.start(serving)
        # Everything built at startup (registry, app, routes) lives until exit: keep it out of
        # the cyclic collector's way, and collect the young generation less often.
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
        log_event(logger, events.LISTENING, urls=",".join(binds), pid=os.getpid())
        # serve() returns after draining requests and running the lifespan shutdown.
    log_event(logger, events.STOPPED)


async def _watch_signals(
    shutdown: trio.Event,
    lifetime: ShopLifetime,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """SIGHUP reloads the registry; the first SIGINT or SIGTERM sets *shutdown*; a second
    one raises :class:`KeyboardInterrupt` here, ending a slow graceful shutdown at once.

    Reloads run one at a time in a child task, so a stop signal is never kept waiting by
    one: a SIGHUP during a reload queues at most one more (further ones fold into it), and
    the first stop signal cancels a reload in progress and any queued.

    Ready once the handlers are installed; runs until cancelled. The second signal is raised
    from this task on purpose: left to Trio's default handler, the interrupt lands in
    whichever task is running, and hypercorn's serve() swallows one raised in its tasks.
    """
    reloads = Reloads(lifetime)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reloads.run)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if not shutdown.is_set():
                        reloads.ask()
                    continue
                if shutdown.is_set():
                    raise KeyboardInterrupt
                log_event(logger, events.SHUTDOWN_REQUESTED, signal=signal.Signals(signum).name)
                shutdown.set()
                reloads.cancel()


@attrs.define(eq=False)
class Reloads:
    """The registry reloads asked for (SIGHUP), run one at a time by :meth:`run`: one asked
    for during a reload is queued, and further ones fold into it."""

    lifetime: ShopLifetime
    _scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _queue: tuple[trio.MemorySendChannel[None], trio.MemoryReceiveChannel[None]] = attrs.field(
        factory=lambda: trio.open_memory_channel[None](1)  # the one queued reload
    )

    def ask(self) -> None:
        """Ask for a reload: it runs once the current one (if any) has finished."""
        with contextlib.suppress(trio.WouldBlock):  # one is queued already: it will do
            self._queue[0].send_nowait(None)

    def cancel(self) -> None:
        """Cancel the reload in progress and any queued; :meth:`run` returns."""
        self._scope.cancel()

    async def run(self) -> None:
        """Run the reloads asked for, one at a time, until :meth:`cancel` (the shutdown: a
        reload it cuts short is logged)."""
        in_progress = False
        with self._scope:
            async for _ in self._queue[1]:
                in_progress = True
                await _reload(self.lifetime)
                in_progress = False
        if in_progress:
            log_event(logger, events.REGISTRY_RELOAD_CANCELLED, logging.WARNING)


async def _reload(lifetime: ShopLifetime) -> None:
    """SIGHUP: reload the registry; a refused one is logged and the old one keeps serving."""
    shop = lifetime.shop
    if shop is None:
        log_event(logger, "registry reload skipped: the shop is not running", logging.WARNING)
        return
    try:
        await shop.reload_from_disk()
    except RegistryError as exc:
        log_event(
            logger, events.REGISTRY_RELOAD_REFUSED,
            logging.ERROR, problems=" | ".join(exc.problems),
        )
    except Exception as exc:  # e.g. the store refused the new stock: the server stays up
        log_event(
            logger, "registry reload failed, the previous registry keeps serving",
            logging.ERROR, error=f"{type(exc).__name__}: {exc}",
        )
