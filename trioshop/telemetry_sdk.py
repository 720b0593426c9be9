"""The OpenTelemetry SDK, set up once per process from Settings: sampler, resource, exporter.

Only ``trioshop run --otel-exporter`` installs it (:func:`process_tracing`); without that
option nothing here runs, no SDK object exists and every span of the library code is the
API's no-op. Spans are exported by the SDK's ``BatchSpanProcessor``, from its own worker
thread, not from the Trio thread: a slow file or collector delays that thread only, never a
request (the processor drops spans when its queue of 2048 is full).
"""

from __future__ import annotations

import base64
import json
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped]  # no stubs installed
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from trioshop.config import Settings, parse_exporter

SERVICE_NAME = "trioshop"
# Where an OTLP/HTTP collector takes traces, under the base URL given to --otel-exporter.
OTLP_TRACES_PATH = "/v1/traces"
# How long one export to an OTLP collector may take, retries included: a collector that is
# down delays a node's exit by at most this (counted in trioshop.node.stop_bound, which the
# cluster waits for before it kills a node).
OTLP_EXPORT_TIMEOUT = 3.0
# The ids OTLP's JSON encoding writes in hex, where protobuf's JSON mapping writes base64.
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def otlp_traces_endpoint(url: str) -> str:
    """*url* itself when it already ends with ``/v1/traces``, else that path appended."""
    return url if url.rstrip("/").endswith(OTLP_TRACES_PATH) else url.rstrip("/") + OTLP_TRACES_PATH


def otlp_json(spans: Sequence[ReadableSpan]) -> str:
    """*spans* as one OTLP/JSON ``ExportTraceServiceRequest`` on one line (the encoding an
    OTLP/HTTP collector accepts with ``Content-Type: application/json``)."""
    message = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource in message.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for item in [span, *span.get("links", [])]:
                    _hex_ids(item)
    return json.dumps(message, separators=(",", ":"))


def _hex_ids(item: dict[str, Any]) -> None:
    for field in _ID_FIELDS:
        if field in item:
            item[field] = base64.b64decode(item[field]).hex()


class OtlpFileExporter(SpanExporter):
    """Appends each batch of spans to a file as one line of OTLP JSON (:func:`otlp_json`).

    The file is opened on construction (``OSError`` if it cannot be: say which path) and
    closed by :meth:`shutdown`. Each line is one unbuffered append (one ``write`` call), so a
    reader sees whole batches and the nodes of a cluster given the same file (through
    ``$TRIOSHOP_OTEL_EXPORTER``) do not cut into each other's lines. A failed write (disk
    full) drops that batch and reports a failure to the SDK, which logs it.
    """

    def __init__(self, path: Path) -> None:
        self._file = path.open("ab", buffering=0)
        self._lock = threading.Lock()  # the processor's thread writes, shutdown closes

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        line = (otlp_json(spans) + "\n").encode()
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            try:
                written = self._file.write(line)
            except OSError:
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if written == len(line) else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every line is written through as it comes


def span_exporter(spec: str) -> SpanExporter:
    """The exporter *spec* names (``--otel-exporter``'s value, read by
    :func:`~trioshop.config.parse_exporter`): ``console`` (one JSON span a line on stdout),
    ``otlp-file:PATH`` or ``otlp:URL`` (an OTLP/HTTP collector; ``/v1/traces`` is appended
    unless the URL ends with it; an export gives up after ``OTLP_EXPORT_TIMEOUT``). Raises
    ``OSError`` when the file cannot be opened, ``ValueError`` for another spec."""
    kind, where = parse_exporter(spec)
    if kind == "console":
        return ConsoleSpanExporter(
            service_name=SERVICE_NAME, out=sys.stdout,
            formatter=lambda span: span.to_json(indent=None) + "\n",
        )
    if kind == "otlp-file":
        return OtlpFileExporter(Path(where))
    # Imported only when asked for: it brings the requests library along.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=otlp_traces_endpoint(where), timeout=OTLP_EXPORT_TIMEOUT)


def tracer_provider(settings: Settings, exporter: SpanExporter) -> TracerProvider:
    """A provider sending to *exporter* through a ``BatchSpanProcessor``: resource
    ``service.name=trioshop`` (and ``service.instance.id`` = the node id), sampler
    parent-based with ``settings.otel_sample_ratio`` for new traces. Its owner shuts it down
    (which flushes the spans still queued)."""
    attributes = {"service.name": SERVICE_NAME}
    if settings.node_id is not None:
        attributes["service.instance.id"] = settings.node_id
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(settings.otel_sample_ratio)),
        resource=Resource.create(attributes),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


@contextmanager
def process_tracing(settings: Settings) -> Iterator[TracerProvider | None]:
    """Trace this process as *settings* say, for the block's duration; ``None`` when
    ``settings.otel_exporter`` is ``None`` (off: nothing is created or installed).

    On, the provider becomes the process's global one (once per process: the API allows no
    second) and is shut down on exit, which exports the spans still queued. Raises ``OSError``
    when the exporter's file cannot be opened.
    """
    if settings.otel_exporter is None:
        yield None
        return
    provider = tracer_provider(settings, span_exporter(settings.otel_exporter))
    trace.set_tracer_provider(provider)
    try:
        yield provider
    finally:
        provider.shutdown()
