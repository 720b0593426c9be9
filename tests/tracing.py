"""The test session's one global TracerProvider, recording only inside tests that ask for it.

``trace.set_tracer_provider`` works once per process, so the ``spans`` fixture installs a
provider once (or joins the SDK provider another module installed first) and switches it on
for its own test only: every other test's spans stay the API's non-recording ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes


class Switch(Sampler):
    """Parent-based always-on while ``on``, else drops every span (non-recording)."""

    def __init__(self) -> None:
        self.on = False
        self._inner = ParentBased(ALWAYS_ON)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if not self.on:
            return SamplingResult(Decision.DROP)
        return self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return "tests' switch"


class GatedProcessor(SimpleSpanProcessor):
    """Exports ended spans at once (no batching to wait for), only while *switch* is on."""

    def __init__(self, exporter: InMemorySpanExporter, switch: Switch) -> None:
        super().__init__(exporter)
        self._switch = switch

    def on_end(self, span: ReadableSpan) -> None:
        if self._switch.on:
            super().on_end(span)


SWITCH = Switch()
EXPORTER = InMemorySpanExporter()
_installed: list[TracerProvider] = []


def _install() -> None:
    if _installed:
        return
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # another module's SDK provider came first
        provider = current
    else:
        provider = TracerProvider(sampler=SWITCH, shutdown_on_exit=False)
        trace.set_tracer_provider(provider)
    provider.add_span_processor(GatedProcessor(EXPORTER, SWITCH))
    _installed.append(provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans ended during this test (read them with ``get_finished_spans()``)."""
    _install()
    EXPORTER.clear()
    SWITCH.on = True
    try:
        yield EXPORTER
    finally:
        SWITCH.on = False
        EXPORTER.clear()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """The finished spans called *name*."""
    return [span for span in exporter.get_finished_spans() if span.name == name]


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    """The one finished span called *name*."""
    found = named(exporter, name)
    names = [span.name for span in exporter.get_finished_spans()]
    assert len(found) == 1, f"{len(found)} spans {name!r} among {names}"
    return found[0]
