"""Request tracing: the server span, its parent from traceparent, and the spans under it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.helpers import ShopClient, open_shop_client
from tests.tracing import named, only, spans
from trioshop.config import Settings
from trioshop.http.tracing import RequestTracing
from trioshop.registry import Registry
from trioshop.store.tracing import SPAN_NAME as STORE_BATCH

__all__ = ["spans"]  # the fixture, used by name

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"
TRACED = Settings(otel_exporter="console")  # the spans go to the test session's provider


@pytest.fixture
async def traced_client(registry: Registry) -> AsyncIterator[ShopClient]:
    async with open_shop_client(registry, TRACED) as client:
        yield client


async def test_request_continues_the_callers_trace(
    traced_client: ShopClient, spans: InMemorySpanExporter
) -> None:
    """A request with a traceparent gets a server span in that trace, the caller's as parent,
    named by its route template, never by the path's user id."""
    status, _, _ = await traced_client.request(
        "GET", "/api/cart/alice", headers={"traceparent": TRACEPARENT}
    )
    assert status == 200
    server = only(spans, "GET /api/cart/<user_id>")
    assert server.kind is SpanKind.SERVER
    assert server.context is not None and server.context.trace_id == TRACE_ID
    assert server.parent is not None and server.parent.span_id == CALLER_SPAN_ID
    assert server.parent.is_remote
    assert dict(server.attributes or {}) == {
        "http.request.method": "GET", "url.path": "/api/cart/alice",
        "http.route": "/api/cart/<user_id>", "http.response.status_code": 200,
    }
    assert server.status.status_code is StatusCode.UNSET


async def test_request_without_traceparent_starts_a_trace(
    traced_client: ShopClient, spans: InMemorySpanExporter
) -> None:
    """A request without (or with a malformed) traceparent is the root of a new trace."""
    await traced_client.request("GET", "/api/products")
    await traced_client.request("GET", "/api/products", headers={"traceparent": "00-zz-yy-01"})
    roots = named(spans, "GET /api/products")
    assert len(roots) == 2
    assert all(span.parent is None for span in roots)
    assert roots[0].context is not None and roots[1].context is not None
    assert roots[0].context.trace_id != roots[1].context.trace_id


async def test_hostile_trace_headers_start_a_trace_and_log_nothing(
    traced_client: ShopClient, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """An oversized or malformed traceparent/tracestate is a new trace, and no warning a
    request: a client cannot fill the log."""
    hostile = [
        {"traceparent": "00-" + "a" * 600},
        {"traceparent": TRACEPARENT, "tracestate": "x" * 600},
        {"traceparent": TRACEPARENT, "tracestate": "Bad Member,,=="},
    ]
    with caplog.at_level(logging.DEBUG):
        for headers in hostile:
            status, _, _ = await traced_client.request("GET", "/api/products", headers=headers)
            assert status == 200
    assert len(named(spans, "GET /api/products")) == 3
    assert [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")] == []


async def test_probes_are_not_traced(
    traced_client: ShopClient, spans: InMemorySpanExporter
) -> None:
    """/healthz and /readyz (polled by the load balancer) make no span; the API still does."""
    for path in ("/healthz", "/readyz", "/api/products"):
        status, _, _ = await traced_client.request("GET", path)
        assert status == 200
    assert [span.name for span in spans.get_finished_spans()] == ["GET /api/products"]


async def test_unmatched_path_is_named_by_method_only(
    traced_client: ShopClient, spans: InMemorySpanExporter
) -> None:
    """A path no route matches gives a span named by its method: raw paths never name spans."""
    status, _, _ = await traced_client.request("GET", "/no/such/thing/42")
    assert status == 404
    span = only(spans, "GET")
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 404


async def test_the_tree_crosses_the_mailbox(
    traced_client: ShopClient, spans: InMemorySpanExporter
) -> None:
    """An add's trace: server span → the cart actor's span (across the mailbox hop) → the
    store batch under the actor's span, all in the caller's trace."""
    status, _, _ = await traced_client.request(
        "POST", "/api/cart/alice/items", json={"sku": "MOUSE-003"},
        headers={"traceparent": TRACEPARENT},
    )
    assert status == 200
    server = only(spans, "POST /api/cart/<user_id>/items")
    assert server.context is not None
    actor = [s for s in named(spans, "actor cart")
             if s.parent is not None and s.parent.span_id == server.context.span_id]
    assert len(actor) == 1, [s.name for s in spans.get_finished_spans()]
    assert actor[0].context is not None and actor[0].context.trace_id == TRACE_ID
    batches = named(spans, STORE_BATCH)
    assert batches
    assert all(s.parent is not None and s.parent.span_id == actor[0].context.span_id
               for s in batches)
    assert all(s.context is not None and s.context.trace_id == TRACE_ID for s in batches)


async def test_services_link_to_the_checkout(
    traced_client: ShopClient, spans: InMemorySpanExporter
) -> None:
    """Each service's handling of an order is a span of its own trace, linked (not parented)
    to the span the checkout ran in, with the order id, service and outcome."""
    await traced_client.add("alice", "MOUSE-003")
    status, body, _ = await traced_client.request(
        "POST", "/api/cart/alice/checkout", headers={"traceparent": TRACEPARENT}
    )
    assert status == 200
    await trio.testing.wait_all_tasks_blocked()
    checkout_server = only(spans, "POST /api/cart/<user_id>/checkout")
    assert checkout_server.context is not None
    checkout_actor = [s for s in named(spans, "actor cart")
                      if s.parent is not None
                      and s.parent.span_id == checkout_server.context.span_id]
    assert len(checkout_actor) == 1
    assert checkout_actor[0].context is not None
    for name, status_text in [("delivery", "dispatched"), ("notifier", "sent")]:
        handled = only(spans, f"service {name}")
        assert handled.parent is None
        assert handled.context is not None and handled.context.trace_id != TRACE_ID
        assert [link.context.span_id for link in handled.links] == [
            checkout_actor[0].context.span_id
        ]
        assert handled.links[0].context.trace_id == TRACE_ID
        assert dict(handled.attributes or {}) == {
            "trioshop.service": name, "trioshop.order.id": body["order"]["order_id"],
            "trioshop.order.status": status_text,
        }


async def test_off_by_default(registry: Registry, spans: InMemorySpanExporter) -> None:
    """Without an exporter in the settings no middleware is installed and no request span is
    made, even when a provider records; requests answer as ever."""
    async with open_shop_client(registry) as client:
        assert not isinstance(client.app.asgi_app, RequestTracing)
        status, _, _ = await client.request(
            "GET", "/api/cart/alice", headers={"traceparent": TRACEPARENT}
        )
    assert status == 200
    assert [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER] == []


async def test_a_cancelled_request_ends_its_span(spans: InMemorySpanExporter) -> None:
    """A request cancelled mid-way (client gone) still ends its span, not as an error."""
    started = trio.Event()

    async def hangs(scope: object, receive: object, send: object) -> None:
        started.set()
        await trio.sleep_forever()

    middleware = RequestTracing(hangs)
    scope = {"type": "http", "method": "GET", "path": "/slow", "headers": []}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(middleware, scope, None, None)  # type: ignore[arg-type]
        await started.wait()
        nursery.cancel_scope.cancel()
    span = only(spans, "GET")
    assert span.status.status_code is StatusCode.UNSET


async def test_unknown_method_is_other(
    traced_client: ShopClient, spans: InMemorySpanExporter
) -> None:
    """A method outside the standard ones names its span _OTHER and is kept as an attribute
    only: a client cannot mint span names."""
    status, _, _ = await traced_client.request("BREW", "/api/cart/alice")
    assert status == 405
    span = only(spans, "_OTHER")  # 405: no route matched this method
    assert span.attributes is not None
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "BREW"
