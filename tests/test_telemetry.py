"""Observability: each log line of a run carries its run id and chunk index, metrics are recorded once
per chunk (never per message), and telemetry stays off unless Application Insights is configured."""

from __future__ import annotations

import logging
import os

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from core.telemetry import _identity_client_id, configure_telemetry
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

    chunk_lines = [r for r in caplog.records if r.name == "ingestion.trigger"]
    assert [(r.run_id, r.chunk_index) for r in chunk_lines] == [("observed", 0), ("observed", 1), ("observed", 2)]
    (enqueued,) = points("chunk.messages_enqueued", "observed")
    (seconds,) = points("chunk.seconds", "observed")
    assert (enqueued.value, seconds.count) == (250, 3)  # three updates for 250 messages: one per chunk
    assert points("chunk.storage_retries", "observed")[0].value == 0


def test_telemetry_is_off_without_a_connection_string_and_uses_the_apps_identity():
    assert configure_telemetry({}) is False
    assert _identity_client_id("ClientId=1234-abcd;Authorization=AAD") == "1234-abcd"
    assert _identity_client_id("") is None
