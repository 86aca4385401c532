"""Observability: each log line of a run carries its run id and chunk index, metrics are recorded once
per chunk (never per message), and telemetry stays off unless Application Insights is configured."""

from __future__ import annotations

import asyncio
import logging
import os

import httpx
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.telemetry import RedactingSpanProcessor, _identity_client_id, configure_telemetry
from testkit.http_requests import chunk_blob, post_ingestion

READER = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))  # what configure_azure_monitor does in Azure


def points(name: str, run_id: str) -> list:
    found = []
    for resource in READER.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found += [p for p in metric.data.data_points if p.attributes.get("run_id") == run_id]
    return found


def test_log_lines_of_a_chunk_carry_its_run_and_index_and_metrics_come_once_per_chunk(
    on_loop, functions, probe, monkeypatch, caplog
):
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "250"))
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "observed", "chunk_size": 100})))
    caplog.set_level(logging.INFO)

    for name in probe.chunk_names("observed"):
        download = probe.chunks.download_blob(name)
        on_loop(functions["ingest_chunk"](chunk_blob("chunks", name, download.readall(), download.properties.metadata)))

    chunk_lines = [r for r in caplog.records if r.name == "ingestion.invocation"]
    assert [(r.run_id, r.chunk_index) for r in chunk_lines] == [("observed", 0), ("observed", 1), ("observed", 2)]
    (enqueued,) = points("chunk.messages_enqueued", "observed")
    (seconds,) = points("chunk.seconds", "observed")
    assert (enqueued.value, seconds.count) == (250, 3)  # three updates for 250 messages: one per chunk
    assert points("chunk.storage_retries", "observed")[0].value == 0


def test_telemetry_is_off_without_a_connection_string_and_uses_the_apps_identity():
    assert configure_telemetry({}) is False
    assert _identity_client_id("ClientId=1234-abcd;Authorization=AAD") == "1234-abcd"
    assert _identity_client_id("") is None


def test_a_duplicate_invocation_counts_only_the_messages_it_sent_itself(on_loop, functions, probe, monkeypatch):
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "100"))
    # A run id of its own: the process's metrics add up every run of one id, whichever test ran it.
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "counted-once", "chunk_size": 100})))
    (name,) = probe.chunk_names("counted-once")
    download = probe.chunks.download_blob(name)
    data, metadata = download.readall(), download.properties.metadata

    async def two_at_once() -> None:  # the second waits for the first's claim, then finds the chunk ingested
        await asyncio.gather(*(functions["ingest_chunk"](chunk_blob("chunks", name, data, metadata)) for _ in "ab"))

    on_loop(two_at_once())

    assert probe.queue_length() == 100
    (enqueued,) = points("chunk.messages_enqueued", "counted-once")
    assert enqueued.value == 100


def test_spans_of_source_requests_carry_no_query_string(app_env):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        url = os.environ["SOURCE_URL"]
        httpx.get(f"{url}{'&' if '?' in url else '?'}api_key=SUPERSECRETKEY", timeout=30)
    finally:
        instrumentor.uninstrument()

    (span,) = exporter.get_finished_spans()
    assert "SUPERSECRETKEY" not in repr(dict(span.attributes or {}))
    assert "[redacted]" in str(span.attributes.get("url.full") or span.attributes.get("http.url"))


def test_where_the_worker_configured_opentelemetry_first_the_app_adds_its_span_redaction_to_it():
    exporter = InMemorySpanExporter()
    worker_provider = TracerProvider()  # what the Python worker sets up before it imports function_app.py
    worker_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(worker_provider)
    connection_string = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9"

    assert configure_telemetry({"APPLICATIONINSIGHTS_CONNECTION_STRING": connection_string}) is True

    tracer = trace.get_tracer("a-library")
    with tracer.start_as_current_span("GET", attributes={"url.full": "https://api.example.com/ids?api_key=k3y"}):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.attributes["url.full"] == "https://api.example.com/ids?[redacted]"
