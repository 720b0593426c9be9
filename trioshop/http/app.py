"""The QuartTrio app factory: its lifespan runs the shop, its routes talk to the carts."""

from __future__ import annotations

import logging
import time

import attrs
import trio
from quart import Response, g, request
from quart_trio import QuartTrio

from trioshop.config import Settings
from trioshop.http.errors import ApiError, register_error_handlers
from trioshop.http.routes import api_routes, health_routes
from trioshop.logs import log_event
from trioshop.registry import Registry
from trioshop.shop.shop import CartFactory, Shop, serve_shop

access_logger = logging.getLogger("trioshop.access")


@attrs.define
class ShopLifetime:
    """The running shop of one app, between lifespan startup and shutdown."""

    shop: Shop | None = None
    stop: trio.Event = attrs.field(factory=trio.Event)
    stopped: trio.Event = attrs.field(factory=trio.Event)

    def get(self) -> Shop:
        if self.shop is None:
            raise ApiError(503, "The shop is not running (starting up or shutting down)")
        return self.shop


def create_app(
    registry: Registry,
    settings: Settings | None = None,
    *,
    cart_factory: CartFactory | None = None,
) -> QuartTrio:
    """Build the app for *registry*; the shop starts with the app's lifespan, not before.

    Startup opens the actor host, the bus and the services (see :func:`open_shop`) in the
    app's lifespan nursery; shutdown stops them in reverse and waits at most
    ``settings.shutdown_timeout`` for that.
    """
    settings = settings or Settings()
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = settings.shutdown_timeout
    app.json.sort_keys = False  # type: ignore[attr-defined]
    lifetime = ShopLifetime()
    app.extensions["trioshop"] = lifetime

    @app.before_serving
    async def start_shop() -> None:
        async def run(*, task_status: trio.TaskStatus[Shop] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await serve_shop(
                    registry, settings, lifetime.stop,
                    cart_factory=cart_factory, task_status=task_status,
                )
            finally:
                lifetime.shop = None
                lifetime.stopped.set()

        lifetime.shop = await app.nursery.start(run)

    @app.after_serving
    async def stop_shop() -> None:
        lifetime.stop.set()
        with trio.move_on_after(settings.shutdown_timeout):
            await lifetime.stopped.wait()

    @app.before_request
    async def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    async def access_log(response: Response) -> Response:
        started = getattr(g, "started", None)
        log_event(
            access_logger,
            "request",
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 2) if started else None,
            client=request.remote_addr,
        )
        return response

    register_error_handlers(
        app, retry_after=settings.retry_after_seconds, max_body_bytes=settings.max_body_bytes
    )
    app.register_blueprint(api_routes(registry.router.prefix, lifetime.get))
    app.register_blueprint(health_routes(lifetime.get))
    return app
