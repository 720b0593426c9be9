"""The trace context across the mailbox hop: captured by the sender, continued by the actor.

Actors run in the host's context, never the sender's, so a request's OpenTelemetry context
cannot reach them on its own: the envelope carries it. Only the OpenTelemetry API is used;
with no SDK configured no span is started and no context looked up: the envelope carries
an empty one.
"""

from __future__ import annotations

from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from trioshop.runtime.actor import Actor
from trioshop.telemetry import record_failure

TRACER_NAME = "trioshop.runtime"

# What an envelope carries instead while the actors start no span (see HandlingTracer).
NO_CONTEXT = otel_context.Context()


def default_tracer() -> trace.Tracer:
    """The runtime's tracer from the global provider (a proxy until an SDK is configured)."""
    return trace.get_tracer(TRACER_NAME)


def _makes_only_no_op_spans(tracer: trace.Tracer) -> bool:
    """Whether *tracer* can make nothing but no-op spans: the API's no-op tracer, or the global
    provider's proxy tracer while no SDK provider is installed (or a no-op one is)."""
    if isinstance(tracer, trace.NoOpTracer):
        return True
    return isinstance(tracer, trace.ProxyTracer) and isinstance(
        trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
    )


class HandlingTracer:
    """The tracer a host's actors handle messages in: ``tracer``, or ``None`` while the
    configured one could only make no-op spans, so that a message then starts no span at all
    (a no-op ``start_span`` through the proxy is most of what tracing cost per message).

    The global provider can be installed once, after the host opened (the tests' session
    provider is): :meth:`refresh` looks again (0.75 µs while off; the host calls it when it
    opens and at each spawn), and from then on the configured tracer is used for good (a
    message sent before that look carries no context, so its span starts a trace).
    """

    __slots__ = ("_configured", "tracer")

    def __init__(self, tracer: trace.Tracer) -> None:
        self._configured = tracer
        self.tracer: trace.Tracer | None = None
        self.refresh()

    def refresh(self) -> None:
        """Use the configured tracer from now on if it can make real spans."""
        if self.tracer is None and not _makes_only_no_op_spans(self._configured):
            self.tracer = self._configured


def start_handling(
    tracer: trace.Tracer,
    actor: Actor,
    message: Any,
    parent: otel_context.Context,
) -> tuple[Span, Token[otel_context.Context]]:
    """Start the span (``actor <kind>``) *actor* handles *message* in, a child of the
    sender's *parent* context, with a *tracer* that makes real spans (see
    :class:`HandlingTracer`).

    The span (sampled or not) is made current, on top of *parent* (so its baggage comes
    along), and the token to undo that is returned. Attributes (kind, pid, the message's
    type: all low-cardinality) are set only on a span that records.
    """
    span = tracer.start_span(actor.kind.span_name, context=parent)
    if span.is_recording():
        span.set_attributes({
            "actor.kind": actor.kind.kind, "actor.pid": actor.pid,
            "actor.message": type(message).__name__,
        })
    return span, otel_context.attach(trace.set_span_in_context(span, parent))


def end_handling(
    span: Span,
    token: Token[otel_context.Context],
    *,
    refusal: Exception | None = None,
    crash: BaseException | None = None,
) -> None:
    """Undo :func:`start_handling`'s current span and end it. A *refusal* is an answer: its
    type is an attribute (``actor.refusal``); a *crash* is recorded as an exception with an
    error status."""
    otel_context.detach(token)
    if span.is_recording():
        if refusal is not None:
            span.set_attribute("actor.refusal", type(refusal).__name__)
        if crash is not None:
            record_failure(span, crash)
    span.end()
