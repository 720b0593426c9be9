"""The real server traces to an OTLP JSON file, continuing a caller's trace, flushed on exit."""

from __future__ import annotations

import json
import queue
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers import run_trioshop
from tests.postgres import fresh_schema
from trioshop.telemetry_sdk import OTLP_EXPORT_TIMEOUT
from trioshop.testing.server import (
    ORDER_HANDLED,
    ServerProcess,
    running,
    running_server,
    wait_for_count,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
SERVER_KIND = 2  # OTLP's SPAN_KIND_SERVER


def spans_in(path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (resource attributes, span) of an OTLP JSON lines file."""
    found: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for line in path.read_text().splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            attributes = {
                item["key"]: item["value"]["stringValue"]
                for item in resource["resource"]["attributes"]
                if "stringValue" in item["value"]
            }
            for scope in resource["scopeSpans"]:
                found.extend((attributes, span) for span in scope["spans"])
    return found


def test_otlp_file_holds_the_request_span(tmp_path: Path) -> None:
    """One request with a traceparent, then SIGINT: the file holds its server span in the
    caller's trace, ids in hex, with the node as the resource's instance, and under it the
    cart actor's span and the store batch's."""
    path = tmp_path / "traces.jsonl"
    with running_server(
        "--memory", "--node-id", "n1", "--otel-exporter", f"otlp-file:{path}"
    ) as server:
        answer = httpx.post(
            f"{server.base_url}/api/cart/alice/items", json={"sku": "MOUSE-003"},
            headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"}, timeout=10,
        )
        assert answer.status_code == 200
        assert server.process is not None
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=30) == 0
    in_trace = [(resource, span) for resource, span in spans_in(path)
                if span["traceId"] == TRACE_ID]
    servers = [(resource, span) for resource, span in in_trace
               if span["name"] == "POST /api/cart/<user_id>/items"]
    assert len(servers) == 1, in_trace
    resource, span = servers[0]
    assert span["kind"] == SERVER_KIND
    assert span["parentSpanId"] == CALLER_SPAN_ID
    assert resource["service.name"] == "trioshop"
    assert resource["service.instance.id"] == "n1"
    [actor] = [item for _, item in in_trace if item["name"] == "actor cart"]
    assert actor["parentSpanId"] == span["spanId"]
    batches = [item for _, item in in_trace if item["name"] == "store.batch"]
    assert batches and all(item["parentSpanId"] == actor["spanId"] for item in batches)


def test_services_link_to_the_checkout_through_sqlite(tmp_path: Path) -> None:
    """A traced checkout on the SQLite store: each service's span, in a trace of its own,
    links to the checkout's span through the traceparent stored with the order."""
    path = tmp_path / "traces.jsonl"
    with running_server(
        "--data-dir", str(tmp_path / "data"), "--otel-exporter", f"otlp-file:{path}"
    ) as server:
        added = httpx.post(
            f"{server.base_url}/api/cart/alice/items", json={"sku": "MOUSE-003"}, timeout=10
        )
        assert added.status_code == 200
        placed = httpx.post(
            f"{server.base_url}/api/cart/alice/checkout", timeout=10,
            headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"},
        )
        assert placed.status_code == 200
        wait_for_count([server], ORDER_HANDLED, 2)
        assert server.stop() == 0
    spans = [span for _, span in spans_in(path)]
    [actor] = [span for span in spans
               if span["name"] == "actor cart" and span["traceId"] == TRACE_ID]
    for service in ("delivery", "notifier"):
        [handled] = [span for span in spans if span["name"] == f"service {service}"]
        assert handled["traceId"] != TRACE_ID and "parentSpanId" not in handled
        assert [(link["traceId"], link["spanId"]) for link in handled["links"]] == [
            (TRACE_ID, actor["spanId"])
        ]


def test_a_checkout_on_one_node_is_linked_from_the_other(tmp_path: Path) -> None:
    """Two nodes on one PostgreSQL schema, tracing to one file: a checkout on n1 is linked
    from each service's span, on whichever node handled the order (the traceparent travels
    in the orders row)."""
    path = tmp_path / "traces.jsonl"
    with fresh_schema() as database, ExitStack() as stack:
        servers = [
            stack.enter_context(running(ServerProcess(
                "--database", database, "--node-id", name, "--otel-exporter", f"otlp-file:{path}",
            )))
            for name in ("n1", "n2")
        ]
        with httpx.Client(base_url=servers[0].base_url, timeout=10) as n1:
            assert n1.post("/api/cart/alice/items", json={"sku": "MOUSE-003"}).status_code == 200
            placed = n1.post(
                "/api/cart/alice/checkout",
                headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"},
            )
            assert placed.status_code == 200
        wait_for_count(servers, ORDER_HANDLED, 2)
        assert [server.stop() for server in servers] == [0, 0]
    found = spans_in(path)
    [(node, actor)] = [(resource["service.instance.id"], span) for resource, span in found
                       if span["name"] == "actor cart" and span["traceId"] == TRACE_ID]
    assert node == "n1"
    for service in ("delivery", "notifier"):
        [handled] = [span for _, span in found if span["name"] == f"service {service}"]
        assert [(link["traceId"], link["spanId"]) for link in handled["links"]] == [
            (TRACE_ID, actor["spanId"])
        ]


def test_sample_ratio_reaches_the_server(tmp_path: Path) -> None:
    """--otel-sample-ratio 0: a request without a traceparent leaves no span, one whose
    caller sampled it is traced all the same (parent-based)."""
    path = tmp_path / "traces.jsonl"
    with running_server(
        "--memory", "--otel-sample-ratio", "0", "--otel-exporter", f"otlp-file:{path}"
    ) as server:
        assert httpx.get(f"{server.base_url}/api/products", timeout=10).status_code == 200
        traced = httpx.get(
            f"{server.base_url}/api/cart/alice", timeout=10,
            headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"},
        )
        assert traced.status_code == 200
        assert server.stop() == 0
    spans = [span for _, span in spans_in(path)]
    assert {span["traceId"] for span in spans} == {TRACE_ID}
    assert "GET /api/cart/<user_id>" in [span["name"] for span in spans]


@contextmanager
def collector() -> Iterator[tuple[str, queue.Queue[tuple[str, bytes]]]]:
    """A stand-in OTLP/HTTP collector on a free port: its base URL, and each POST's path and
    body as they come."""
    received: queue.Queue[tuple[str, bytes]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.put((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_otlp_collector_gets_the_request_span() -> None:
    """--otel-exporter otlp:URL posts protobuf to URL/v1/traces; the request's server span
    is there, in the caller's trace, by the time the server has stopped."""
    with collector() as (url, received), running_server(
        "--memory", "--otel-exporter", f"otlp:{url}"
    ) as server:
        answer = httpx.get(
            f"{server.base_url}/api/cart/alice", timeout=10,
            headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"},
        )
        assert answer.status_code == 200
        assert server.stop() == 0
        posts = []
        while not received.empty():
            posts.append(received.get())
    assert posts and {path for path, _ in posts} == {"/v1/traces"}
    names: list[str] = []
    for _, body in posts:
        request = ExportTraceServiceRequest.FromString(body)
        names.extend(
            span.name for resource in request.resource_spans
            for scope in resource.scope_spans for span in scope.spans
            if span.trace_id.hex() == TRACE_ID
        )
    assert "GET /api/cart/<user_id>" in names


def test_collector_down_delays_the_exit_by_the_export_timeout_at_most() -> None:
    """A collector that refuses connections: requests answer, and the exit waits for the
    last export at most OTLP_EXPORT_TIMEOUT (plus the stop itself), not the SDK's 10 s
    default that would outlast the cluster's SIGKILL deadline."""
    with socket.socket() as unused:  # bound, never listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{unused.getsockname()[1]}"
        with running_server("--memory", "--otel-exporter", f"otlp:{refused}") as server:
            assert httpx.get(f"{server.base_url}/api/products", timeout=10).status_code == 200
            asked = time.monotonic()
            assert server.stop() == 0
            took = time.monotonic() - asked
    assert took < OTLP_EXPORT_TIMEOUT + 2.5, f"the exit took {took:.1f} s"


def test_console_exporter_prints_one_span_a_line() -> None:
    """--otel-exporter console prints each span as one JSON line among the log lines."""
    with running_server("--memory", "--otel-exporter", "console") as server:
        assert httpx.get(f"{server.base_url}/api/products", timeout=10).status_code == 200
        assert server.stop() == 0
        lines = [line for line in server.output().splitlines() if line.startswith("{")]
    names = [json.loads(line)["name"] for line in lines]
    assert "GET /api/products" in names


def test_unwritable_trace_file_is_refused_in_one_line(tmp_path: Path) -> None:
    """An otlp-file path that cannot be opened: exit 1, one line naming it, no traceback."""
    where = tmp_path / "missing" / "traces.jsonl"
    result = run_trioshop(
        "run", "--memory", "--bind", "127.0.0.1:0", "--otel-exporter", f"otlp-file:{where}"
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(where) in lines[0], result.stderr
