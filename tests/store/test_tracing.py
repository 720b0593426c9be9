"""A span per store batch: a child of the first caller's span, linked to the others'."""

from __future__ import annotations

import contextlib

import outcome
import trio
import trio.testing
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.store.support import ONE_A
from tests.tracing import only, spans
from trioshop.store import CartWrite, Store, StoreError
from trioshop.store.batch import Batcher, Outcome
from trioshop.store.tracing import SPAN_NAME

__all__ = ["spans"]  # the fixture, used by name


def recording() -> tuple[trace.Tracer, InMemorySpanExporter]:
    """A tracer of a provider of this test's own (never the global one) and its spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


async def test_a_batch_span_is_a_child_of_the_first_caller_linked_to_the_others() -> None:
    """Three callers' requests in one batch: one span, parent the first, links the others."""
    tracer, exporter = recording()
    release = trio.Event()

    async def apply(requests: list[int]) -> list[Outcome]:
        await release.wait()
        return [outcome.Error(ValueError(n)) if n < 0 else outcome.Value(n) for n in requests]

    batcher = Batcher(apply, kind="test", operation="numbers", tracer=tracer)
    callers: dict[int, trace.SpanContext] = {}

    async def call(n: int) -> None:
        with tracer.start_as_current_span(f"caller {n}") as span:
            callers[n] = span.get_span_context()
            with contextlib.suppress(ValueError):
                await batcher.submit(n)

    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        nursery.start_soon(call, 0)  # its batch of one waits for release...
        await trio.testing.wait_all_tasks_blocked()
        for n in (1, -2, 3):  # ...while these queue up: the next batch, one span
            nursery.start_soon(call, n)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    batches = [s for s in exporter.get_finished_spans() if s.name == SPAN_NAME]
    assert [s.attributes["store.batch.size"] for s in batches] == [1, 3]  # type: ignore[index]
    second = batches[1]
    assert second.parent is not None
    first_caller = next(n for n, c in callers.items() if c.span_id == second.parent.span_id)
    assert second.context.trace_id == callers[first_caller].trace_id
    linked = {link.context.span_id for link in second.links}
    assert linked == {callers[n].span_id for n in (1, -2, 3) if n != first_caller}
    assert dict(second.attributes or {}) == {
        "store.kind": "test", "store.batch.operation": "numbers", "store.batch.size": 3,
        "store.batch.refused": 1, "store.batch.result": "ok",
    }


async def test_a_batch_that_fails_whole_is_an_error_span() -> None:
    """A batch apply fails whole ends its span with an error status and the exception."""
    tracer, exporter = recording()

    async def apply(requests: list[int]) -> list[Outcome]:
        raise StoreError("disk full")

    batcher = Batcher(apply, inline=True, kind="test", tracer=tracer)
    with tracer.start_as_current_span("caller") as caller, contextlib.suppress(StoreError):
        await batcher.submit(1)
    [span] = [s for s in exporter.get_finished_spans() if s.name == SPAN_NAME]
    assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
    assert span.status.status_code is StatusCode.ERROR
    assert "disk full" in (span.status.description or "")
    assert span.attributes is not None and span.attributes["store.batch.result"] == "failed"
    assert [event.name for event in span.events] == ["exception"]


async def test_a_cancelled_batch_span_says_cancelled_and_the_cancellation_goes_on() -> None:
    """A batch cancelled inside apply ends its span as cancelled (no error, nothing refused)."""
    tracer, exporter = recording()
    entered = trio.Event()

    async def apply(requests: list[int]) -> list[Outcome]:
        entered.set()
        await trio.sleep_forever()
        raise AssertionError("not reached")

    batcher = Batcher(apply, inline=True, kind="test", tracer=tracer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.submit, 1)
        await entered.wait()
        nursery.cancel_scope.cancel()
    assert nursery.cancel_scope.cancelled_caught  # the Cancelled reached the nursery
    [span] = [s for s in exporter.get_finished_spans() if s.name == SPAN_NAME]
    assert span.attributes is not None
    assert span.attributes["store.batch.result"] == "cancelled"
    assert "store.batch.refused" not in span.attributes
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()


async def test_a_batch_without_a_tracing_sdk_records_nothing() -> None:
    """With the API's no-op tracer, a batch works and its span records nothing."""
    batches: list[list[int]] = []

    async def apply(requests: list[int]) -> list[Outcome]:
        batches.append(requests)
        return [outcome.Value(n) for n in requests]

    batcher = Batcher(apply, inline=True, tracer=trace.NoOpTracer())
    assert await batcher.submit(7) == 7 and batches == [[7]]


async def test_every_store_writes_its_carts_in_a_batch_span_of_the_request(
    store: Store, spans: InMemorySpanExporter
) -> None:
    """On every backend a cart write's batch span is a child of the writing request's span."""
    with trace.get_tracer("test").start_as_current_span("request") as request:
        await store.save_cart(CartWrite(user_id="u", lines=(ONE_A,), version=0))
    batch = only(spans, SPAN_NAME)
    assert batch.parent is not None
    assert batch.parent.span_id == request.get_span_context().span_id
    assert batch.attributes is not None
    assert batch.attributes["store.kind"] == type(store).__name__.removesuffix("Store").lower()
