"""Tracing through the OpenTelemetry API only: W3C trace contexts in and out, and links.

Library code (http, shop, runtime, store) calls :func:`opentelemetry.trace.get_tracer` and
these helpers; all of it is a no-op until a process installs an SDK ``TracerProvider``
(``trioshop.telemetry_sdk``, done by ``trioshop run --otel-exporter``). Nothing here imports
the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

# The W3C Trace Context header (https://www.w3.org/TR/trace-context/) and its companion.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_PROPAGATOR = TraceContextTextMapPropagator()

# The current context (a contextvar lookup): what a sender captures to carry across a task hop
# (an actor's mailbox, a store's batch queue), where its trace is continued.
capture = otel_context.get_current


def record_failure(span: Span, failure: BaseException) -> None:
    """Record *failure* on *span* as an exception event with an error status naming it."""
    span.record_exception(failure)
    span.set_status(Status(StatusCode.ERROR, f"{type(failure).__name__}: {failure}"))


def remote_context(carrier: Mapping[str, str]) -> Context:
    """The context of the caller's span named by *carrier*'s ``traceparent`` (and
    ``tracestate``); an empty context (a new trace) when it has none or a malformed one."""
    return _PROPAGATOR.extract(carrier)


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span, to be stored or sent on; ``None`` when no span
    is valid (tracing off, or no span around)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


def links_to(traceparent: str | None) -> list[trace.Link]:
    """A span link to the span *traceparent* names (a span of another trace, e.g. the checkout
    that queued an order); none when it is ``None`` or malformed."""
    if traceparent is None:
        return []
    context = trace.get_current_span(remote_context({TRACEPARENT: traceparent})).get_span_context()
    return [trace.Link(context)] if context.is_valid else []
