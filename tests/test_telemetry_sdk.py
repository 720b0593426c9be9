"""The SDK's set-up: parent-based ratio sampling, the resource, the exporters, off by default."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, StatusCode

from tests.helpers import printed_by_fresh_python
from trioshop.config import Settings
from trioshop.http.tracing import RequestTracing
from trioshop.telemetry_sdk import (
    OtlpFileExporter,
    otlp_json,
    otlp_traces_endpoint,
    span_exporter,
    tracer_provider,
)

SAMPLED = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UNSAMPLED = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"


class Recorder:
    """A provider built by ``tracer_provider`` over an in-memory exporter."""

    def __init__(self, ratio: float) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = tracer_provider(
            Settings(otel_sample_ratio=ratio, node_id="n1"), self.exporter
        )

    def finished(self) -> list[Any]:
        self.provider.force_flush()
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def recorders() -> Iterator[list[Recorder]]:
    made: list[Recorder] = []
    yield made
    for recorder in made:
        recorder.provider.shutdown()


def recorder(made: list[Recorder], ratio: float) -> Recorder:
    made.append(Recorder(ratio))
    return made[-1]


def answer(status: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def request(provider: TracerProvider, app: Any, traceparent: bytes | None = None) -> None:
    """One GET through RequestTracing with *provider*'s tracer."""
    headers = [] if traceparent is None else [(b"traceparent", traceparent)]
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": headers}

    async def send(message: Any) -> None:
        pass

    await RequestTracing(app, provider.get_tracer("test"))(scope, None, send)  # type: ignore[arg-type]


async def test_ratio_zero_samples_no_new_trace(recorders: list[Recorder]) -> None:
    """Ratio 0 with no parent: nothing is recorded."""
    zero = recorder(recorders, 0.0)
    await request(zero.provider, answer(200))
    assert zero.finished() == []


async def test_ratio_zero_follows_a_sampled_parent(recorders: list[Recorder]) -> None:
    """Ratio 0 with a sampled parent: recorded all the same (parent-based)."""
    zero = recorder(recorders, 0.0)
    await request(zero.provider, answer(200), SAMPLED)
    [span] = zero.finished()
    assert span.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736


async def test_ratio_one_follows_an_unsampled_parent(recorders: list[Recorder]) -> None:
    """Ratio 1 with a parent that was not sampled: not recorded (the caller decided)."""
    one = recorder(recorders, 1.0)
    await request(one.provider, answer(200), UNSAMPLED)
    await request(one.provider, answer(200))
    [span] = one.finished()
    assert span.parent is None


async def test_resource_names_the_service_and_node(recorders: list[Recorder]) -> None:
    """Every span's resource says service.name trioshop and the node's id."""
    one = recorder(recorders, 1.0)
    await request(one.provider, answer(200))
    [span] = one.finished()
    assert span.resource.attributes["service.name"] == "trioshop"
    assert span.resource.attributes["service.instance.id"] == "n1"


async def test_server_error_marks_the_span(recorders: list[Recorder]) -> None:
    """A 5xx answer makes the span an error; a 4xx does not."""
    one = recorder(recorders, 1.0)
    await request(one.provider, answer(503))
    await request(one.provider, answer(404))
    statuses = [span.status.status_code for span in one.finished()]
    assert statuses == [StatusCode.ERROR, StatusCode.UNSET]


async def test_exception_is_recorded_and_raised(recorders: list[Recorder]) -> None:
    """An exception out of the app is recorded on the span, marks it an error, and goes on."""
    one = recorder(recorders, 1.0)

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("gone")

    with pytest.raises(LookupError):
        await request(one.provider, broken)
    [span] = one.finished()
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


async def test_otlp_json_is_one_request_with_hex_ids(recorders: list[Recorder]) -> None:
    """A batch encodes as one OTLP JSON request; ids (and links' ids) are hex, not base64."""
    one = recorder(recorders, 1.0)
    tracer = one.provider.get_tracer("test")
    with tracer.start_as_current_span("parent") as parent:
        link = Link(parent.get_span_context())
        with tracer.start_as_current_span("child", links=[link]):
            pass
    finished = one.finished()
    line = otlp_json(finished)
    assert "\n" not in line
    [resource] = json.loads(line)["resourceSpans"]
    by_name = {span["name"]: span for span in resource["scopeSpans"][0]["spans"]}
    parent_context = parent.get_span_context()
    assert by_name["parent"]["traceId"] == f"{parent_context.trace_id:032x}"
    assert by_name["child"]["parentSpanId"] == f"{parent_context.span_id:016x}"
    assert by_name["child"]["links"][0]["spanId"] == f"{parent_context.span_id:016x}"


def test_otlp_file_appends_a_line_per_export(tmp_path: Path) -> None:
    """Each export appends one line to the file; after shutdown an export fails, not raises."""
    one = Recorder(1.0)
    with one.provider.get_tracer("test").start_as_current_span("a"):
        pass
    spans = one.finished()
    one.provider.shutdown()
    exporter = OtlpFileExporter(tmp_path / "t.jsonl")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert exporter.export(spans) is SpanExportResult.FAILURE
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]


def test_exporter_specs() -> None:
    """otlp:URL gets /v1/traces unless it has it; an unknown spec is a ValueError."""
    assert otlp_traces_endpoint("http://h:4318") == "http://h:4318/v1/traces"
    assert otlp_traces_endpoint("http://h:4318/") == "http://h:4318/v1/traces"
    assert otlp_traces_endpoint("http://h/v1/traces") == "http://h/v1/traces"
    with pytest.raises(ValueError, match="otlp-file:PATH"):
        span_exporter("zipkin:http://h")


@pytest.mark.parametrize("spec", ["otlp:localhost:4318", "otlp:", "otlp-file:", "jaeger"])
def test_one_rule_for_every_reader(spec: str) -> None:
    """A spec the command line refuses is refused the same way by Settings and span_exporter."""
    message = "expected console, otlp-file:PATH or otlp:http://HOST:4318"
    with pytest.raises(ValueError, match=message):
        Settings(otel_exporter=spec)
    with pytest.raises(ValueError, match=message):
        span_exporter(spec)


def test_off_installs_nothing() -> None:
    """Without an exporter, process_tracing makes no provider and leaves the API's no-op in
    place (checked in a fresh interpreter: the global provider is set once per process)."""
    code = (
        "from opentelemetry import trace\n"
        "from trioshop.config import Settings\n"
        "from trioshop.telemetry_sdk import process_tracing\n"
        "with process_tracing(Settings()) as provider:\n"
        "    print(provider, type(trace.get_tracer_provider()).__name__)\n"
    )
    assert printed_by_fresh_python(code) == ["None", "ProxyTracerProvider"]
