"""The product's spine, through the app's own functions: HTTP → chunk blobs → blob trigger → queue."""

from __future__ import annotations

import json
import math
import os

import pytest

from fanout.demo_api import demo_ids
from testkit.cli_runner import cli
from testkit.http_requests import body_of, chunk_blob, get_status, ingest_every_chunk, post_ingestion


# Azurite reads a queue back in O(messages held) a call, so tests that read every message back keep to a few
# thousand; tests/test_pagination.py takes 300,000 through chunking, benchmarks/ a million.
@pytest.mark.own_azurite
def test_every_source_id_reaches_the_queue_once(on_loop, functions, probe, monkeypatch):
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "3000"))
    response = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "spine-10k", "chunk_size": 1500})))

    assert response.status_code == 202, response.get_body()
    assert response.headers["Location"] == "/api/ingestions/spine-10k"
    body = body_of(response)
    assert body["run_id"] == "spine-10k"
    assert body["status_url"] == "http://localhost:7071/api/ingestions/spine-10k"
    assert (body["chunks"], body["messages"]) == (math.ceil(3000 / 1500), 3000)

    names = ingest_every_chunk(on_loop, functions, probe, "spine-10k")
    assert names == ["spine-10k/000000.jsonl", "spine-10k/000001.jsonl"]
    bodies = probe.drain()
    assert len(bodies) == 3000
    assert set(bodies) == set(demo_ids(3000))

    status = body_of(on_loop(functions["get_ingestion_status"](get_status("spine-10k"))))
    assert status["state"] == "completed"
    assert status["chunks"] == {"total": 2, "ingested": 2, "failed": 0, "ingesting": 0, "stopped": 0, "waiting": 0}
    assert status["messages"] == {"fetched": 3000, "enqueued": 3000, "send_retries": 0, "queue_messages": 3000}
    assert status["messages_by_queue"] == {f"AzureWebJobsStorage/{os.environ['QUEUE_NAME']}": 3000}
    assert status["completed_at"] >= status["chunked_at"] >= status["created_at"]


def test_chunk_ingested_twice_is_sent_once(on_loop, functions, probe, monkeypatch):
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "300"))
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "twice", "chunk_size": 100})))
    ingest_every_chunk(on_loop, functions, probe, "twice")
    ingest_every_chunk(on_loop, functions, probe, "twice")

    assert probe.queue_length() == 300
    assert sorted(probe.drain()) == sorted(demo_ids(300))


def test_second_post_with_same_run_id_does_not_create_a_second_run(on_loop, functions, probe, monkeypatch):
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "250"))
    first = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "same", "chunk_size": 100})))
    second = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "same", "chunk_size": 100})))

    assert first.status_code == second.status_code == 202
    assert body_of(first) == body_of(second)
    assert probe.chunk_names("same") == ["same/000000.jsonl", "same/000001.jsonl", "same/000002.jsonl"]
    conflict = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "same", "chunk_size": 50})))
    assert conflict.status_code == 409
    assert "already exists" in body_of(conflict)["detail"]
    assert body_of(conflict)["run_id"] == "same"


def test_object_items_become_compact_json_messages(on_loop, functions, probe):
    from core.contract import encode_chunk

    items = [{"id": 1, "name": "ä b"}, 42, "plain", [1, 2]]
    from core.context import app_context
    from core.run_store import RunRecord

    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "objects-seed", "chunk_size": 10})))
    ctx = on_loop(app_context())  # a chunk is ingested only for a run that has a record (a purged one has none)
    on_loop(ctx.runs.create(RunRecord("objects", "default", 10, state="chunked", chunks=1, messages=4)))
    probe.chunks.upload_blob("objects/000000.jsonl", encode_chunk(items), metadata={"message_count": "4"})
    on_loop(functions["ingest_chunk"](chunk_blob("chunks", "objects/000000.jsonl", encode_chunk(items))))

    assert sorted(probe.drain()) == sorted(['{"id":1,"name":"ä b"}', "42", "plain", "[1,2]"])


@pytest.mark.own_azurite
def test_cli_run_lands_every_source_id(app_env, probe):
    source = app_env["SOURCE_URL"].replace("10000", "3000")
    result = cli("run", "--json", "--run-id", "cli-10k", "--chunk-size", "1500", env={**app_env, "SOURCE_URL": source})

    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "run_id: cli-10k"
    summary = json.loads(lines[-1])
    assert summary["state"] == "completed"
    assert (summary["chunks"], summary["messages_enqueued"]) == (2, 3000)
    assert set(probe.drain()) == set(demo_ids(3000))

    status = cli("status", "cli-10k", "--json", env=app_env)
    assert json.loads(status.stdout)["state"] == "completed"


@pytest.mark.own_azurite
def test_ten_thousand_ids_in_ten_chunks_end_as_ten_thousand_messages(app_env, demo_api, probe):
    result = cli("run", "--json", "--chunk-size", "1000", env=app_env)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["chunks"], summary["messages_enqueued"]) == (10, 10_000)
    assert probe.queue_length() == 10_000
