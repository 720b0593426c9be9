"""Tests of the trace context across the mailbox hop, with the SDK's in-memory span exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.helpers import printed_by_fresh_python
from trioshop.runtime import ActorContext, ActorHost, Refusal, open_actor_host
from trioshop.runtime.tracing import TRACER_NAME, HandlingTracer


@attrs.define
class Traced:
    """What a test needs: a host whose actors trace into *exporter*, and a tracer for callers."""

    host: ActorHost
    tracer: trace.Tracer
    exporter: InMemorySpanExporter

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    """A tracer provider of the test's own (the global one is never set)."""
    provider = TracerProvider()
    yield provider
    provider.shutdown()


@pytest.fixture
async def traced(provider: TracerProvider) -> AsyncIterator[Traced]:
    """An actor host tracing into an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with open_actor_host(tracer=provider.get_tracer(TRACER_NAME)) as host:
        yield Traced(host, provider.get_tracer("test"), exporter)


class SpanSeer:
    """Replies with the id of the span current while it handles the message; 'boom' crashes
    it, 'no' is refused; 'wait' waits for its gate."""

    def __init__(self, gate: trio.Event | None = None) -> None:
        self.gate = gate

    async def handle(self, ctx: ActorContext, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("boom")
        if message == "no":
            raise Refusal("no")
        if message == "wait" and self.gate is not None:
            await self.gate.wait()
        return trace.get_current_span().get_span_context().span_id


async def test_the_actor_span_is_a_child_of_the_request_across_the_mailbox_hop(
    traced: Traced,
) -> None:
    """A request sent inside a span is handled in an ``actor cart`` span, its child, current
    while the behaviour runs."""
    actor = traced.host.spawn(SpanSeer(), name="cart:alice")
    with traced.tracer.start_as_current_span("request") as request:
        current_in_actor = await traced.host.request(actor, "hi", timeout=5)
    (span,) = traced.spans("actor cart")
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    assert span.context is not None
    assert span.context.trace_id == request.get_span_context().trace_id
    assert current_in_actor == span.context.span_id
    assert span.attributes == {"actor.kind": "cart", "actor.pid": actor.pid, "actor.message": "str"}


async def test_a_queued_message_keeps_its_own_senders_trace(traced: Traced) -> None:
    """Two requests from two traces, the second queued while the first is handled: each actor
    span is the child of its own sender's span, not of whoever was current."""
    gate = trio.Event()
    actor = traced.host.spawn(SpanSeer(gate), name="cart:alice")
    senders: dict[str, int] = {}

    async def send(label: str, message: str) -> None:
        with traced.tracer.start_as_current_span(label) as span:
            senders[label] = span.get_span_context().span_id
            await traced.host.request(actor, message, timeout=5)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(send, "first", "wait"))
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(partial(send, "second", "hi"))
        await trio.testing.wait_all_tasks_blocked()
        assert actor.mailbox_depth == 1  # the second waits behind the first
        gate.set()
    spans = traced.spans("actor cart")
    assert [s.parent.span_id for s in spans if s.parent] == [senders["first"], senders["second"]]
    assert len({s.context.trace_id for s in spans if s.context}) == 2


async def test_a_message_sent_outside_any_trace_starts_its_own(traced: Traced) -> None:
    """With no span at the sender, the actor's span is a root (``actor`` for an unnamed one)."""
    await traced.host.request(traced.host.spawn(SpanSeer()), "hi", timeout=5)
    (span,) = traced.spans("actor actor")
    assert span.parent is None


async def test_a_refusal_is_an_attribute_and_a_crash_an_error(traced: Traced) -> None:
    """A refused request leaves the span's status unset with ``actor.refusal``; a crash records
    the exception with an error status."""
    actor = traced.host.spawn(SpanSeer(), name="cart:alice")
    with pytest.raises(Refusal):
        await traced.host.request(actor, "no", timeout=5)
    with pytest.raises(Exception, match="ended before replying"):
        await traced.host.request(actor, "boom", timeout=5)
    refused, crashed = traced.spans("actor cart")
    assert refused.attributes is not None
    assert refused.attributes["actor.refusal"] == "Refusal"
    assert refused.status.status_code is StatusCode.UNSET
    assert crashed.status.status_code is StatusCode.ERROR
    assert [event.name for event in crashed.events] == ["exception"]


async def test_a_no_op_tracer_makes_no_span_current_in_the_actor() -> None:
    """With the API's no-op tracer (what runs when no SDK is configured) the actor handles the
    message outside any span."""
    async with open_actor_host(tracer=trace.NoOpTracer()) as host:
        assert await host.request(host.spawn(SpanSeer()), "hi", timeout=5) == 0


def test_the_handling_tracer_is_none_only_while_spans_would_be_no_ops(
    provider: TracerProvider,
) -> None:
    """The API's no-op tracer starts no span at all; an SDK provider's tracer is kept."""
    assert HandlingTracer(trace.NoOpTracer()).tracer is None
    real = provider.get_tracer(TRACER_NAME)
    assert HandlingTracer(real).tracer is real


def test_a_global_no_op_provider_leaves_the_handling_tracer_off() -> None:
    """A proxy tracer taken before the global provider was set to the API's no-op provider
    can only make no-op spans, so no span is started (a fresh interpreter: set once)."""
    code = (
        "from opentelemetry import trace\n"
        "from trioshop.runtime.tracing import HandlingTracer, default_tracer\n"
        "proxy = default_tracer()\n"
        "trace.set_tracer_provider(trace.NoOpTracerProvider())\n"
        "print(type(proxy).__name__, HandlingTracer(proxy).tracer)\n"
    )
    assert printed_by_fresh_python(code) == ["ProxyTracer", "None"]


def test_a_host_opened_before_the_sdk_follows_it_from_the_next_spawn() -> None:
    """With no SDK at open the actors start no span; once one is installed, the next spawn
    turns tracing on for every actor (checked in a fresh interpreter: the global provider is
    set once per process)."""
    code = (
        "import trio\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import"
        " InMemorySpanExporter\n"
        "from trioshop.runtime import open_actor_host\n"
        "class Seer:\n"
        "    async def handle(self, ctx, message):\n"
        "        return trace.get_current_span().get_span_context().is_valid\n"
        "async def main():\n"
        "    async with open_actor_host() as host:\n"
        "        before = host.spawn(Seer())\n"
        "        print(await host.request(before, 1, timeout=5))\n"
        "        exporter = InMemorySpanExporter()\n"
        "        provider = TracerProvider()\n"
        "        provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
        "        trace.set_tracer_provider(provider)\n"
        "        print(await host.request(before, 1, timeout=5))\n"
        "        after = host.spawn(Seer())\n"
        "        print(await host.request(before, 1, timeout=5))\n"
        "        print(await host.request(after, 1, timeout=5))\n"
        "        print(len(exporter.get_finished_spans()))\n"
        "trio.run(main)\n"
    )
    assert printed_by_fresh_python(code) == ["False", "False", "True", "True", "2"]
