"""Logs worth keeping: each trigger says in one INFO line what it did (a duplicate event that it sent
nothing), and the Azure SDK's per-request lines (each an Application Insights trace, paid for) stay out
unless AZURE_SDK_LOG_LEVEL asks for them."""

from __future__ import annotations

import logging
import os
import re

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from testkit.http_requests import chunk_blob, post_ingestion

APP = ("api.", "chunking.", "core.", "ingestion.", "runs.")


def app_lines(records: list[logging.LogRecord]) -> list[str]:
    return [record.getMessage() for record in records if record.name.startswith(APP) and record.levelno >= logging.INFO]


def sdk_lines(records: list[logging.LogRecord]) -> list[str]:
    return [record.getMessage() for record in records if record.name.startswith("azure.")]


def deliver(on_loop, functions, probe, name: str):
    download = probe.chunks.download_blob(name)
    blob = chunk_blob("chunks", name, download.readall(), download.properties.metadata)
    on_loop(functions["ingest_chunk"](blob))


def test_each_trigger_logs_one_line_of_what_it_did_and_no_sdk_request_lines(
    on_loop, functions, probe, monkeypatch, caplog
):
    monkeypatch.setenv("SOURCE_URL", re.sub(r"count=\d+", "count=1000", os.environ["SOURCE_URL"]))
    caplog.set_level(logging.DEBUG)
    said: dict[str, list[str]] = {}

    def step(name: str, call) -> None:
        caplog.clear()
        call()
        said[name] = app_lines(caplog.records)
        assert not sdk_lines(caplog.records), (name, sdk_lines(caplog.records)[:2])

    step(
        "start", lambda: on_loop(functions["start_ingestion"](post_ingestion({"run_id": "logged", "chunk_size": 500})))
    )
    first, second = probe.chunk_names("logged")
    step("chunk 0", lambda: deliver(on_loop, functions, probe, first))
    step("chunk 0 again", lambda: deliver(on_loop, functions, probe, first))
    step("chunk 1", lambda: deliver(on_loop, functions, probe, second))
    step("sweep", lambda: on_loop(functions["sweep_stalled_chunks"](TimerRequest())))

    assert [len(lines) for lines in said.values()] == [1, 1, 1, 2, 1], said  # and chunk 1 ended the run: its event
    assert "run logged started: chunked, 2 chunks, 1000 items in" in said["start"][0]
    assert "500 messages sent now, 500 of 500 in all" in said["chunk 0"][0]
    assert "was ingested already: nothing sent" in said["chunk 0 again"][0]
    assert any("completed: 1000 messages enqueued; event sent" in line for line in said["chunk 1"])
    assert said["sweep"][0].startswith("sweep: ") and " s" in said["sweep"][0]


def test_the_sdk_request_lines_come_back_when_asked_for(on_loop, functions, probe, monkeypatch, caplog):
    monkeypatch.setenv("SOURCE_URL", re.sub(r"count=\d+", "count=10", os.environ["SOURCE_URL"]))
    monkeypatch.setenv("AZURE_SDK_LOG_LEVEL", "INFO")
    caplog.set_level(logging.DEBUG)
    try:
        on_loop(functions["start_ingestion"](post_ingestion({"run_id": "chatty"})))
        assert sdk_lines(caplog.records)
    finally:
        logging.getLogger("azure").setLevel(logging.WARNING)  # as every other test's context sets it


@pytest.fixture(autouse=True)
def _quiet_sdk_after():
    yield
    logging.getLogger("azure").setLevel(logging.WARNING)


def test_a_malformed_message_is_one_error_line(on_loop, functions, app_env, caplog):
    caplog.set_level(logging.DEBUG)
    on_loop(functions["continue_chunking"](func.QueueMessage(body=b"not json")))
    assert len(app_lines(caplog.records)) == 1
