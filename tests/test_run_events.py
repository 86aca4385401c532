"""Fan-in and tolerated failures: exactly one completion event per run, however many invocations finish at
once; failed chunks past `max_failed_chunks` fail the run at once, within it the run completes."""

from __future__ import annotations

import asyncio
import os

import pytest
from azure.storage.blob import BlobServiceClient

from core.context import app_context
from core.contract import run_event_mark_blob
from core.run_events import settle_run
from fanout.demo_api import demo_ids
from testkit.chunked_runs import delivered
from testkit.http_requests import body_of, chunk_blob, get_status, post_ingestion, post_redrive, run_queued, status_of
from testkit.run_events import events_of


@pytest.fixture
def ids_300(monkeypatch, app_env) -> dict[str, str]:
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "300"))
    return app_env


def test_racing_finishers_send_exactly_one_completion_event(on_loop, functions, probe, ids_300):
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "racing", "chunk_size": 50})))
    blobs = [delivered(probe, name) for name in probe.chunk_names("racing") * 2]

    async def every_chunk_twice_at_once() -> None:  # six chunks, each delivered twice, all at the same moment
        await asyncio.gather(*(functions["ingest_chunk"](blob) for blob in blobs))

    on_loop(every_chunk_twice_at_once())

    (event,) = events_of(probe, ids_300)
    assert event["run_id"] == "racing" and event["state"] == "completed"
    assert event["chunks"] == {"total": 6, "ingested": 6, "failed": 0, "ingesting": 0, "stopped": 0, "waiting": 0}
    assert event["messages"] == {"fetched": 300, "enqueued": 300, "send_retries": 0, "queue_messages": 300}
    assert event["failed_chunks"] == [] and event["created_at"] <= event["completed_at"] <= event["finished_at"]
    assert sorted(probe.drain()) == sorted(demo_ids(300))
    assert status_of(on_loop, functions, "racing")["finished_at"] == event["finished_at"]


def test_settling_a_run_many_times_at_once_sends_one_event(on_loop, functions, probe, azurite, ids_300):
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "settled-often", "chunk_size": 300})))
    (name,) = probe.chunk_names("settled-often")
    on_loop(functions["ingest_chunk"](delivered(probe, name)))
    assert len(events_of(probe, ids_300)) == 1
    runs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("ingestion-runs")
    runs.delete_blob(run_event_mark_blob("settled-often"))  # as if the event were never sent

    async def twelve_at_once() -> None:
        ctx = await app_context()
        await asyncio.gather(*(settle_run(ctx, "settled-often") for _ in range(12)))

    on_loop(twelve_at_once())

    assert [event["state"] for event in events_of(probe, ids_300)] == ["completed"]


@pytest.mark.parametrize(("tolerated", "final", "enqueued"), [(0, "failed", 100), (1, "completed", 200)])
def test_tolerated_failures_switch_the_final_state_at_the_threshold(
    on_loop, functions, probe, ids_300, tolerated, final, enqueued
):
    """Chunk 1 of 3 is malformed. Tolerating none, the run fails at once and chunk 2 then sends nothing;
    tolerating one, chunk 2 is sent and the run completes, chunk 1 listed as failed."""
    body = {"run_id": f"tolerate-{tolerated}", "chunk_size": 100, "max_failed_chunks": tolerated}
    on_loop(functions["start_ingestion"](post_ingestion(body)))
    first, broken, last = probe.chunk_names(body["run_id"])
    on_loop(functions["ingest_chunk"](delivered(probe, first)))
    on_loop(functions["ingest_chunk"](chunk_blob("chunks", broken, b"{broken\n", {"message_count": "1"})))
    assert status_of(on_loop, functions, body["run_id"])["state"] == ("failed" if tolerated == 0 else "ingesting")
    on_loop(functions["ingest_chunk"](delivered(probe, last)))

    status = status_of(on_loop, functions, body["run_id"])
    assert (status["state"], status["max_failed_chunks"]) == (final, tolerated)
    assert status["messages"]["enqueued"] == probe.queue_length() == enqueued
    assert [chunk["index"] for chunk in status["failed_chunks"]] == [1]
    (event,) = events_of(probe, ids_300)
    assert (event["state"], event["messages"]["enqueued"]) == (final, enqueued)
    assert event["failed_chunks"] == [{"index": 1, "error": status["failed_chunks"][0]["error"]}]
    assert "line 1 is not valid JSON" in event["failed_chunks"][0]["error"]


def test_a_failed_run_is_redriven_to_completion_with_a_second_event(on_loop, functions, probe, ids_300):
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "fail-then-fix", "chunk_size": 100})))
    first, broken, last = probe.chunk_names("fail-then-fix")
    on_loop(functions["ingest_chunk"](chunk_blob("chunks", broken, b"{broken\n", {"message_count": "1"})))
    for name in (first, last):
        on_loop(functions["ingest_chunk"](delivered(probe, name)))  # the run failed already: both stop at once
    assert probe.queue_length() == 0
    assert [event["state"] for event in events_of(probe, ids_300)] == ["failed"]

    scheduled = body_of(on_loop(functions["redrive_ingestion"](post_redrive("fail-then-fix"))))["scheduled"]
    assert status_of(on_loop, functions, "fail-then-fix")["state"] == "ingesting"  # not failed while redriven
    run_queued(on_loop, functions["redrive_chunk"], probe.queue_client(ids_300["REDRIVE_QUEUE"]))

    assert scheduled == [0, 1, 2]
    assert sorted(probe.drain()) == sorted(demo_ids(300))  # the "broken" chunk blob itself was never broken
    assert [event["state"] for event in events_of(probe, ids_300)] == ["completed"]


def test_a_bad_max_failed_chunks_answers_400_naming_the_field(on_loop, functions, app_env):
    for value in (-1, "2", 1.5, True, 10**7):
        answer = on_loop(functions["start_ingestion"](post_ingestion({"max_failed_chunks": value})))
        assert answer.status_code == 400, value
        assert body_of(answer)["field"] == "max_failed_chunks"


def test_status_answers_202_with_retry_after_while_the_run_goes_on_and_200_once_it_ends(
    on_loop, functions, probe, ids_300
):
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "polled", "chunk_size": 150})))
    first, second = probe.chunk_names("polled")
    on_loop(functions["ingest_chunk"](delivered(probe, first)))

    going = on_loop(functions["get_ingestion_status"](get_status("polled")))
    on_loop(functions["ingest_chunk"](delivered(probe, second)))
    done = on_loop(functions["get_ingestion_status"](get_status("polled")))

    assert going.status_code == 202 and going.headers["Location"] == "/api/ingestions/polled"
    assert 2 <= int(going.headers["Retry-After"]) <= 30
    body = body_of(going)
    assert body["state"] == "ingesting" and body["messages_per_second"] > 0
    assert body["eta_seconds"] == pytest.approx(150 / body["messages_per_second"], abs=0.2)
    assert done.status_code == 200 and "Retry-After" not in done.headers
    assert body_of(done)["state"] == "completed" and body_of(done)["eta_seconds"] is None
