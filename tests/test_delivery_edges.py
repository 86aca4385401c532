"""Back-pressure, redrive and message-shape edges a hostile review found, each through the app's own
functions against Azurite: a chunk that fails after it waited ends (logged, never handed back, never
waited on locally), a redrive schedules a waiting chunk once, a claim-checked item's blob holds its text
whatever the shape, and a body no strict JSON consumer could read is refused."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
import time

import azure.functions as func
import jsonschema
import pytest
from azure.storage.blob import BlobClient

from api.openapi import openapi_document
from chunking.request import parse_ingestion_request
from core.context import app_context
from core.contract import COUNT_METADATA, FIRST_METADATA, encode_chunk
from core.errors import RequestError
from core.run_store import RunRecord, utc_now
from core.settings import Settings
from runs.local import ingest_pending_chunks
from runs.redrive import redrive_run
from testkit.http_requests import body_of, chunk_blob, post_ingestion, post_redrive, status_of
from testkit.storage_probe import StorageProbe

OVERSIZED = "x" * 70_000  # refused under LARGE_MESSAGE_MODE=reject


def _write_run(on_loop, probe: StorageProbe, run_id: str, items: list[str], **fields) -> str:
    """A run of one chunk holding `items`, chunked: the chunk blob waits for its trigger."""
    ctx = on_loop(app_context())
    record = RunRecord(run_id, "default", 5000, created_at=utc_now(), **fields)
    etag = on_loop(ctx.runs.create(record))
    name = f"{run_id}/000000.jsonl"
    probe.chunks.upload_blob(name, encode_chunk(items), metadata={COUNT_METADATA: str(len(items)), FIRST_METADATA: "0"})
    on_loop(ctx.runs.save(record.chunked(chunks=1, messages=len(items)), if_match=etag))
    return name


def _trigger(on_loop, functions, probe: StorageProbe, name: str) -> None:
    blob = probe.chunks.download_blob(name)
    on_loop(functions["ingest_chunk"](chunk_blob("chunks", name, blob.readall(), blob.properties.metadata)))


def _fill(probe: StorageProbe, messages: int = 10) -> None:
    """Another producer's backlog in the target queue."""
    with contextlib.suppress(Exception):
        probe.queue.create_queue()
    for k in range(messages):
        probe.queue.send_message(base64.b64encode(f"other-{k}".encode()).decode())


def _consume(probe: StorageProbe) -> None:
    while batch := list(probe.queue.receive_messages(max_messages=32)):
        for message in batch:
            probe.queue.delete_message(message)


def _handed_back(probe: StorageProbe, queue: str) -> int:
    """Messages on the redrive queue, hidden ones too (a hand-back is hidden BACKLOG_RETRY_SECONDS)."""
    with contextlib.suppress(Exception):
        return probe.queue_client(queue).get_queue_properties().approximate_message_count or 0
    return 0


def test_a_chunk_failing_after_it_waited_is_logged_failed_and_never_handed_back(
    on_loop, functions, probe, app_env, monkeypatch, caplog
):
    monkeypatch.setenv("BACKLOG_RETRY_SECONDS", "1")
    monkeypatch.setenv("LARGE_MESSAGE_MODE", "reject")
    name = _write_run(on_loop, probe, "fail-after-wait", ["a", "b", OVERSIZED], max_backlog=3)
    _fill(probe)
    _trigger(on_loop, functions, probe, name)
    assert status_of(on_loop, functions, "fail-after-wait")["chunks"]["waiting"] == 1
    _consume(probe)
    time.sleep(1.2)  # the hand-back is hidden BACKLOG_RETRY_SECONDS
    redrives = probe.queue_client(app_env["REDRIVE_QUEUE"])
    with caplog.at_level(logging.INFO):
        for message in list(redrives.receive_messages(max_messages=32)):
            on_loop(functions["redrive_chunk"](func.QueueMessage(body=message.content.encode())))
            redrives.delete_message(message)
    status = status_of(on_loop, functions, "fail-after-wait")
    assert (status["state"], status["chunks"]["failed"], status["chunks"]["waiting"]) == ("failed", 1, 0)
    assert any("failed and will not be retried" in record.getMessage() for record in caplog.records)
    time.sleep(1.2)
    assert _handed_back(probe, app_env["REDRIVE_QUEUE"]) == 0


def test_a_local_run_ends_when_a_chunk_that_waited_fails(on_loop, probe, app_env, monkeypatch):
    monkeypatch.setenv("BACKLOG_RETRY_SECONDS", "1")
    monkeypatch.setenv("LARGE_MESSAGE_MODE", "reject")
    _write_run(on_loop, probe, "local-fail", ["a", "b", OVERSIZED], max_backlog=3)
    _fill(probe)
    threading.Timer(1.5, _consume, (probe,)).start()  # the consumer catches up 1.5 s in
    said: list[str] = []
    on_loop(asyncio.wait_for(ingest_pending_chunks(on_loop(app_context()), "local-fail", said.append), timeout=20))
    assert any("waits" in line for line in said) and "failed" in said[-1], said


def test_a_redrive_here_waits_for_the_backlog_and_a_scheduled_one_adds_no_copy(
    on_loop, functions, probe, app_env, monkeypatch
):
    monkeypatch.setenv("BACKLOG_RETRY_SECONDS", "1")
    monkeypatch.setenv("LARGE_MESSAGE_MODE", "reject")
    items = [f"id-{k}" for k in range(5)]
    name = _write_run(on_loop, probe, "redrive-wait", [*items, OVERSIZED], max_backlog=3)
    _trigger(on_loop, functions, probe, name)
    assert status_of(on_loop, functions, "redrive-wait")["state"] == "failed"
    _fill(probe)
    monkeypatch.setenv("LARGE_MESSAGE_MODE", "claim-check")  # the operator's fix, then a redrive

    answers = [on_loop(functions["redrive_ingestion"](post_redrive("redrive-wait"))) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [202, 202, 202], [a.get_body() for a in answers]
    redrives = probe.queue_client(app_env["REDRIVE_QUEUE"])
    assert _handed_back(probe, app_env["REDRIVE_QUEUE"]) == 3  # three copies: the first waits, the rest end
    for message in list(redrives.receive_messages(max_messages=32)):
        on_loop(functions["redrive_chunk"](func.QueueMessage(body=message.content.encode())))
        redrives.delete_message(message)
    assert status_of(on_loop, functions, "redrive-wait")["chunks"]["waiting"] == 1
    assert _handed_back(probe, app_env["REDRIVE_QUEUE"]) == 1  # its own hand-back, and no more
    for _ in range(2):  # a waiting chunk has its hand-back scheduled: a redrive adds no copy
        assert body_of(on_loop(functions["redrive_ingestion"](post_redrive("redrive-wait"))))["scheduled"] == []
    assert _handed_back(probe, app_env["REDRIVE_QUEUE"]) == 1

    threading.Timer(1.5, _consume, (probe,)).start()
    result = on_loop(asyncio.wait_for(redrive_run(on_loop(app_context()), "redrive-wait", here=True), timeout=30))
    assert result.to_json()["chunks"][0]["state"] == "ingested", result.to_json()
    assert status_of(on_loop, functions, "redrive-wait")["state"] == "completed"


def test_a_claim_checked_item_is_stored_as_its_text_whatever_the_shape(on_loop, functions, probe, azurite):
    big = 'q"' * 30_000  # its JSON line is 90,002 bytes, its text 60,000
    stored = {}
    for run_id, fields in (("cc-plain", {}), ("cc-envelope", {"envelope": True}), ("cc-batch", {"batch_max_items": 5})):
        _trigger(on_loop, functions, probe, _write_run(on_loop, probe, run_id, ["small", big], **fields))
        for text in probe.drain():
            if "claim_check" in text:
                message = json.loads(text)
                reference = (message.get("items") or [message.get("item", message)])[-1]["claim_check"]
                blob = BlobClient.from_connection_string(azurite.connection_string, reference["container"],
                                                         reference["blob"])  # fmt: skip
                stored[run_id] = blob.download_blob().readall().decode()
    assert stored == {"cc-plain": big, "cc-envelope": big, "cc-batch": big}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"batch_max_items": 2, "batch_input": {"x": NaN}}', "NaN"),
        (b'{"batch_max_items": 2, "batch_input": {"y": 1e999}}', "1e999"),
        (b'{"batch_max_items": 2, "batch_input": {"y": -Infinity}}', "Infinity"),
        (b'{"batch_max_items": 2, "batch_input": {"a": "\\ud800"}}', "lone surrogate"),
        (b'{"batch_max_items": 2, "batch_input": ' + b'{"a":' * 40 + b"1" + b"}" * 41, "nested deeper"),
    ],
)
def test_a_body_no_strict_json_consumer_could_read_is_refused(on_loop, functions, probe, body, named):
    response = on_loop(functions["start_ingestion"](post_ingestion(body)))
    assert response.status_code == 400, response.get_body()
    assert named in body_of(response)["detail"] and "Traceback" not in response.get_body().decode()


@pytest.mark.parametrize("default_items", ["1", "10"])
def test_the_documents_body_schema_accepts_only_what_the_app_accepts_for_batch_input(default_items):
    settings = Settings.from_env({"MESSAGE_BATCH_MAX_ITEMS": default_items})
    schema = openapi_document(settings)["paths"]["/api/ingestions"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]  # fmt: skip
    validator = jsonschema.Draft202012Validator(schema)
    for body in ({"batch_input": {"job": 1}, "batch_max_items": 1}, {"batch_input": {"job": 1}},
                 {"batch_input": {"job": 1}, "batch_max_items": 3}, {"batch_input": {"job": 1}, "batch_max_items": 3,
                                                                     "batch_max_bytes": 1000}):  # fmt: skip
        try:
            parse_ingestion_request(json.dumps(body).encode(), settings)
            accepted = True
        except RequestError:
            accepted = False
        assert validator.is_valid(body) == accepted, (body, default_items)
