"""The QuartTrio app factory: its lifespan runs the shop, its routes talk to the carts."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import attrs
import trio
from quart import Response, g, request
from quart_trio import QuartTrio

from trioshop import events
from trioshop.config import Settings
from trioshop.http.admin import admin_routes, client_address
from trioshop.http.auth import UserAuth
from trioshop.http.errors import ApiError, register_error_handlers
from trioshop.http.live import LiveFeed, LiveHub, RequestWindow, live_routes, stream_seconds
from trioshop.http.metrics import CONTENT_TYPE, Metrics
from trioshop.http.openapi import openapi_document
from trioshop.http.pages import page_routes
from trioshop.http.routes import api_routes, health_routes
from trioshop.http.tracing import trace_requests
from trioshop.logs import log_event, request_id
from trioshop.registry import Registry
from trioshop.shop import CartFactory, Shop
from trioshop.shop.assembly import serve_shop

access_logger = logging.getLogger("trioshop.access")

# A client's X-Request-ID is kept only if it is short and plain; otherwise one is generated.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# An encoded slash in the path: hypercorn decodes it before routing, so "/cart/a%2Fitems/X"
# would reach another route (or another user's cart) than the one the client named.
ENCODED_SLASH = b"%2f"


def check_raw_path(raw_path: bytes) -> None:
    """A JSON 404 for a path with an encoded ``/`` (``%2F``, ``%2f``): no route names one."""
    if ENCODED_SLASH in raw_path.lower():
        raise ApiError(404, "Not found: a path segment may not contain an encoded '/' (%2F)")


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
    auth: UserAuth | None = None,
) -> QuartTrio:
    """Build the app for *registry*; the shop starts with the app's lifespan, not before.

    With *auth*, every cart and order route of a user needs that user's bearer token.

    Startup opens the store, the actor host, the bus and the services (see ``open_shop``)
    in the app's lifespan nursery; shutdown stops them in reverse and waits at most
    ``settings.shutdown_timeout`` for that.
    """
    settings = settings or Settings()
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = settings.shutdown_timeout
    app.json.sort_keys = False  # type: ignore[attr-defined]
    # Werkzeug would answer '/api//products' with an HTML 308 redirect that no error handler
    # can reshape; without merging, such a path is a JSON 404 like any unknown route.
    app.url_map.merge_slashes = False
    lifetime = ShopLifetime()
    metrics = Metrics.create(lambda: lifetime.shop)
    app.extensions["trioshop"] = lifetime
    app.extensions["trioshop.metrics"] = metrics
    live = LiveFeed(
        LiveHub(on_drop=metrics.live_dropped.inc), RequestWindow(metrics.latency),
        settings.node_id, stream_seconds(settings.idle_connection_timeout),
    )
    app.extensions["trioshop.live"] = live
    openapi = openapi_document(
        registry.router.prefix, settings.max_body_bytes, user_auth=auth is not None
    )

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

        await app.nursery.start(live.run, lambda: lifetime.shop)
        lifetime.shop = await app.nursery.start(run)

    @app.after_serving
    async def stop_shop() -> None:
        live.close()
        lifetime.stop.set()
        with trio.move_on_after(settings.shutdown_timeout):
            await lifetime.stopped.wait()

    @app.before_request
    async def start_request() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        request_id.set(g.request_id)
        g.started = time.perf_counter()
        g.client = client_address(
            request.remote_addr, request.headers.getlist("X-Forwarded-For"),
            settings.trusted_proxies,
        )
        check_raw_path(request.scope.get("raw_path", b""))

    @app.after_request
    async def finish_request(response: Response) -> Response:
        started = getattr(g, "started", None)
        seconds = time.perf_counter() - started if started else 0.0
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.observe(rule, request.method, response.status_code, seconds)
        log_event(
            access_logger, events.REQUEST, method=request.method, path=request.path,
            status=response.status_code, duration_ms=round(seconds * 1000, 2),
            client=g.get("client", request.remote_addr),
        )
        if "request_id" in g:
            response.headers["X-Request-ID"] = g.request_id
        if settings.node_id is not None:
            response.headers["X-Served-By"] = settings.node_id
        return response

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/openapi.json")
    async def openapi_json() -> dict[str, Any]:
        return openapi

    register_error_handlers(
        app, retry_after=settings.retry_after_seconds, max_body_bytes=settings.max_body_bytes
    )
    app.register_blueprint(api_routes(registry.router.prefix, lifetime.get, auth))
    app.register_blueprint(admin_routes(registry.router.prefix, lifetime.get, settings.admin_token))
    app.register_blueprint(health_routes(lifetime.get, settings.readiness_timeout))
    app.register_blueprint(page_routes(
        registry.router.prefix, settings.admin_token, live, user_auth=auth is not None
    ))
    app.register_blueprint(live_routes(live, settings.admin_token))
    if settings.otel_exporter is not None:  # off: no request does any tracing work
        trace_requests(app)
    return app
