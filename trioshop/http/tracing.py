"""One OpenTelemetry server span per HTTP request, continuing the caller's W3C trace context.

Our own ASGI middleware rather than opentelemetry-instrumentation-asgi, whose defaults
(a span per ``send`` and ``receive`` besides the request's) double the CPU a request costs.
Installed only when tracing is on (``trace_requests``): off, no request does any work for it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from quart import request
from quart_trio import QuartTrio

from trioshop.http.routes import HEALTH_BLUEPRINT
from trioshop.telemetry import TRACEPARENT, TRACESTATE, remote_context

ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]

# The span attributes, as OpenTelemetry's HTTP semantic conventions name them.
METHOD = "http.request.method"
METHOD_ORIGINAL = "http.request.method_original"
PATH = "url.path"
ROUTE = "http.route"
STATUS_CODE = "http.response.status_code"
# Methods named as they are; any other is "_OTHER" (a client cannot mint span names).
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
_TRACE_HEADERS = frozenset({TRACEPARENT.encode(), TRACESTATE.encode()})
# OpenTelemetry's loggers that warn about every malformed or oversized trace header a client
# sends: quieted to errors while requests are traced, so a client cannot fill the log (such
# a header just starts a new trace).
CLIENT_HEADER_LOGGERS = ("opentelemetry.trace.propagation.tracecontext", "opentelemetry.trace.span")


class RequestTracing:
    """ASGI middleware: each HTTP request runs inside a server span named by its method (its
    route template is added by :func:`trace_requests`' hook, e.g. ``POST
    /api/cart/<user_id>/items``), the child of the span an incoming ``traceparent`` names.

    Attributes: ``http.request.method``, ``url.path``, ``http.response.status_code``; the
    span's status is an error on a 5xx answer or an exception (recorded, and raised on).
    Sampling is the provider's (parent-based: a caller's sampled flag is followed).
    """

    def __init__(
        self, app: ASGIApp, tracer: trace.Tracer | None = None,
        untraced: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.tracer = tracer or trace.get_tracer(__name__)
        self.untraced = untraced

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http" or scope["path"] in self.untraced:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"] if name in _TRACE_HEADERS
        }
        method = span_method(scope["method"])
        attributes = {METHOD: method, PATH: scope["path"]}
        if method != scope["method"]:
            attributes[METHOD_ORIGINAL] = scope["method"]
        # An Exception out of the app is recorded on the span, an error; trio.Cancelled (a
        # BaseException: the client left, or shutdown) just ends it.
        with self.tracer.start_as_current_span(
            method, context=remote_context(carrier), kind=SpanKind.SERVER, attributes=attributes,
        ) as span:

            async def traced_send(message: ASGISendEvent) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute(STATUS_CODE, message["status"])
                    if message["status"] >= 500:
                        span.set_status(StatusCode.ERROR)
                await send(message)

            await self.app(scope, receive, traced_send)


async def _name_by_route() -> None:
    """Name the request's span ``METHOD route`` once its route is known (low cardinality:
    the template, never the path with a user id in it)."""
    if request.url_rule is not None:
        span = trace.get_current_span()
        span.update_name(f"{span_method(request.method)} {request.url_rule.rule}")
        span.set_attribute(ROUTE, request.url_rule.rule)


def span_method(method: str) -> str:
    """*method* as spans name it: itself when standard, else ``_OTHER``."""
    return method if method in KNOWN_METHODS else "_OTHER"


def trace_requests(app: QuartTrio) -> None:
    """Run each of *app*'s HTTP requests in a server span (:class:`RequestTracing`), named by
    its route; call once, its routes registered, before serving. The spans go to the
    process's tracer provider. The probes (``/healthz``, ``/readyz``) are not traced: a
    load balancer polls them every half second on every node, which would bury the traces
    that matter."""
    probes = frozenset(
        rule.rule for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(f"{HEALTH_BLUEPRINT}.")
    )
    for name in CLIENT_HEADER_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    app.before_request(_name_by_route)
    app.asgi_app = RequestTracing(app.asgi_app, untraced=probes)  # type: ignore[method-assign]
