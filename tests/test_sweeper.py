"""Stalls heal themselves: the `sweep_stalled_chunks` timer redrives chunks whose event was dropped or
dead-lettered and chunks whose invocation died, leaves live ones alone, and stops at its bound.

Each test has an Azurite of its own: a sweep looks at every run in the account."""

from __future__ import annotations

import json
import os
import time

import pytest
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobServiceClient

from core.context import app_context
from core.contract import ChunkRef
from fanout.demo_api import demo_ids
from ingestion.claim import claim_chunk
from testkit.http_requests import body_of, chunk_blob, get_status, post_ingestion, run_queued

pytestmark = pytest.mark.own_azurite


def start_run(on_loop, functions, monkeypatch, run_id: str, count: int) -> None:
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", str(count)))
    answer = on_loop(functions["start_ingestion"](post_ingestion({"run_id": run_id, "chunk_size": 100})))
    assert answer.status_code == 202, answer.get_body()


def trigger(on_loop, functions, probe, name: str) -> None:
    download = probe.chunks.download_blob(name)
    on_loop(functions["ingest_chunk"](chunk_blob("chunks", name, download.readall(), download.properties.metadata)))


def sweep(on_loop, functions) -> None:
    on_loop(functions["sweep_stalled_chunks"](TimerRequest()))


def test_a_dropped_event_and_a_dead_invocation_are_redriven_by_one_sweep_and_a_live_chunk_is_left_alone(
    on_loop, functions, probe, monkeypatch, app_env
):
    """Chunk 0 ingested; chunk 1 in flight elsewhere (live lease); chunk 2's event dropped (never started);
    chunk 3's invocation died (its lease ran out)."""
    monkeypatch.setenv("SWEEP_STALE_SECONDS", "1")
    start_run(on_loop, functions, monkeypatch, "healing", 400)
    names = probe.chunk_names("healing")
    trigger(on_loop, functions, probe, names[0])
    runs = on_loop(app_context()).runs
    on_loop(claim_chunk(runs, ChunkRef("healing", 1), "another-host", lease_seconds=600))
    on_loop(claim_chunk(runs, ChunkRef("healing", 3), "a-dead-host", lease_seconds=0.2))
    time.sleep(1.2)

    sweep(on_loop, functions)

    redrives = probe.queue_client(app_env["REDRIVE_QUEUE"])
    assert run_queued(on_loop, functions["redrive_chunk"], redrives) == 2  # chunks 2 and 3, not 1
    ids = demo_ids(400)
    assert sorted(probe.drain()) == sorted(ids[:100] + ids[200:])
    status = body_of(on_loop(functions["get_ingestion_status"](get_status("healing"))))
    assert status["chunks"] == {"total": 4, "ingested": 3, "failed": 0, "ingesting": 1}
    assert status["sweeps"]["last_redriven"] == [2, 3] and status["sweeps"]["chunks_redriven"] == 2


def test_a_sweep_redrives_at_most_its_bound_and_the_next_sweep_the_rest(
    on_loop, functions, probe, monkeypatch, app_env
):
    monkeypatch.setenv("SWEEP_STALE_SECONDS", "1")
    monkeypatch.setenv("SWEEP_MAX_REDRIVES", "2")
    start_run(on_loop, functions, monkeypatch, "bounded", 300)  # three chunks, no event for any
    time.sleep(1.1)
    redrives = probe.queue_client(app_env["REDRIVE_QUEUE"])

    sweep(on_loop, functions)
    assert run_queued(on_loop, functions["redrive_chunk"], redrives) == 2
    sweep(on_loop, functions)
    assert run_queued(on_loop, functions["redrive_chunk"], redrives) == 1
    sweep(on_loop, functions)
    assert run_queued(on_loop, functions["redrive_chunk"], redrives) == 0  # nothing left to heal

    assert sorted(probe.drain()) == sorted(demo_ids(300))


def test_a_young_chunk_is_left_to_its_trigger(on_loop, functions, probe, monkeypatch, app_env):
    monkeypatch.setenv("SWEEP_STALE_SECONDS", "3600")
    start_run(on_loop, functions, monkeypatch, "young", 100)

    sweep(on_loop, functions)

    assert run_queued(on_loop, functions["redrive_chunk"], probe.queue_client(app_env["REDRIVE_QUEUE"])) == 0


def test_dead_lettered_events_are_redriven_and_cleared_and_an_unreadable_one_stays(
    on_loop, functions, probe, monkeypatch, app_env, azurite
):
    monkeypatch.setenv("SWEEP_STALE_SECONDS", "3600")  # only the dead letter can tell the sweeper
    start_run(on_loop, functions, monkeypatch, "lettered", 200)
    trigger(on_loop, functions, probe, probe.chunk_names("lettered")[0])
    letters = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
        "eventgrid-deadletter"
    )
    letters.create_container()
    event = {
        "id": "1", "eventType": "Microsoft.Storage.BlobCreated", "deadLetterReason": "MaxDeliveryAttemptsExceeded",
        "subject": "/blobServices/default/containers/chunks/blobs/lettered/000001.jsonl", "data": {},
    }  # fmt: skip
    letters.upload_blob("topic/CHUNK-CREATED/2026/11/23/19/a.json", json.dumps([event]))
    letters.upload_blob("topic/CHUNK-CREATED/2026/11/23/19/b.json", b"<not json>")

    sweep(on_loop, functions)

    assert run_queued(on_loop, functions["redrive_chunk"], probe.queue_client(app_env["REDRIVE_QUEUE"])) == 1
    assert sorted(probe.drain()) == sorted(demo_ids(200))
    assert [blob.name for blob in letters.list_blobs()] == ["topic/CHUNK-CREATED/2026/11/23/19/b.json"]
