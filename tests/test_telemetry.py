"""W3C trace contexts in and out of the current span, and links to a stored one."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.tracing import spans
from trioshop.telemetry import current_traceparent, links_to, remote_context

__all__ = ["spans"]  # the fixture, used by name

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_no_span_no_traceparent() -> None:
    """Outside any valid span there is no traceparent to store."""
    assert current_traceparent() is None


def test_traceparent_names_the_current_span(spans: InMemorySpanExporter) -> None:
    """Inside a recording span, the traceparent carries its trace and span ids, sampled."""
    with trace.get_tracer(__name__).start_as_current_span("checkout") as span:
        context = span.get_span_context()
        traceparent = current_traceparent()
    assert traceparent is not None
    _, trace_id, span_id, flags = traceparent.split("-")
    assert (trace_id, span_id) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled


def test_remote_context_continues_or_starts_anew() -> None:
    """A well-formed traceparent gives the caller's span (remote, sampled); a malformed one
    an empty context, i.e. a new trace."""
    caller = trace.get_current_span(remote_context({"traceparent": TRACEPARENT}))
    context = caller.get_span_context()
    assert context.is_remote and context.trace_flags.sampled
    assert context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    bad = remote_context({"traceparent": "00-00000000000000000000000000000000-0-01"})
    assert not trace.get_current_span(bad).get_span_context().is_valid


def test_links_to_a_stored_traceparent() -> None:
    """A stored traceparent becomes one link to its span; none or a malformed one, no link."""
    [link] = links_to(TRACEPARENT)
    assert link.context.span_id == 0x00F067AA0BA902B7
    assert links_to(None) == []
    assert links_to("not a traceparent") == []
