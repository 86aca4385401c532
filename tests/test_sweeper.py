"""Stalls heal themselves: the `sweep_stalled_chunks` timer redrives chunks whose event was dropped or
dead-lettered and chunks whose invocation died, leaves live ones alone, and stops at its bound.

Each test has an Azurite of its own: a sweep looks at every run in the account."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import time
from dataclasses import replace
from types import SimpleNamespace

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobServiceClient

import runs.sweep as sweeper
from core.context import app_context
from core.contract import ChunkRef
from core.run_store import RunRecord
from fanout.demo_api import demo_ids
from ingestion.claim import claim_chunk
from ingestion.slots import take_slot
from testkit.http_requests import body_of, chunk_blob, get_status, post_ingestion, post_redrive, run_queued

pytestmark = pytest.mark.own_azurite


def start_run(on_loop, functions, monkeypatch, run_id: str, count: int) -> None:
    monkeypatch.setenv("SOURCE_URL", re.sub(r"count=\d+", f"count={count}", os.environ["SOURCE_URL"]))
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
    assert status["chunks"] == {"total": 4, "ingested": 3, "failed": 0, "ingesting": 1, "stopped": 0, "waiting": 0}
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


def test_a_run_with_an_unreadable_status_is_skipped_and_every_other_run_is_still_swept(
    on_loop, functions, probe, monkeypatch, app_env, azurite
):
    monkeypatch.setenv("SWEEP_STALE_SECONDS", "1")
    start_run(on_loop, functions, monkeypatch, "aaa-bad", 100)
    start_run(on_loop, functions, monkeypatch, "zzz-dropped", 100)
    runs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("ingestion-runs")
    runs.upload_blob("aaa-bad/chunks/000000", b"", metadata={"state": "paused", "index": "0", "sent": "0",
                     "count": "0", "updated_at": "x"})  # fmt: skip
    time.sleep(1.1)

    report = on_loop(sweep_once())

    assert (report.runs_checked, report.runs_unreadable, report.redriven) == (2, 1, {"zzz-dropped": [0]})
    assert run_queued(on_loop, functions["redrive_chunk"], probe.queue_client(app_env["REDRIVE_QUEUE"])) == 1


async def sweep_once(now: float | None = None):
    from runs.sweep import sweep as sweep_now

    return await sweep_now(await app_context(), now)


def test_a_stalled_chunk_waiting_for_a_slot_is_not_queued_again_at_every_sweep(
    on_loop, functions, probe, monkeypatch, app_env
):
    monkeypatch.setenv("SWEEP_STALE_SECONDS", "1")
    monkeypatch.setenv("THROTTLE_RETRY_SECONDS", "1")
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "100"))
    answer = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "slotted", "chunk_size": 100,
                                                                  "max_concurrency": 1})))  # fmt: skip
    assert answer.status_code == 202
    ctx = on_loop(app_context())
    slots = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    held = on_loop(take_slot(slots, "slotted", 1, "a-long-invocation", 600))
    on_loop(claim_chunk(ctx.runs, ChunkRef("slotted", 0), "a-dead-host", lease_seconds=0.2))
    time.sleep(1.2)
    redrives = probe.queue_client(app_env["REDRIVE_QUEUE"])

    for _ in range(3):  # the slot is taken: the stalled chunk waits, no copy is queued
        sweep(on_loop, functions)
    assert redrives.get_queue_properties().approximate_message_count == 0

    on_loop(held.set_lease(0.0))  # the slot frees: one sweep queues one redrive, and it ingests the chunk
    sweep(on_loop, functions)
    assert run_queued(on_loop, functions["redrive_chunk"], redrives) == 1
    assert sorted(probe.drain()) == sorted(demo_ids(100))


def test_a_hand_back_touches_a_stalled_chunk_so_the_sweeper_leaves_it_to_the_waiting_copy(
    on_loop, functions, probe, monkeypatch, app_env
):
    monkeypatch.setenv("SWEEP_STALE_SECONDS", "1")
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "100"))
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "touched", "chunk_size": 100,
                                                         "max_concurrency": 1})))  # fmt: skip
    ctx = on_loop(app_context())
    slots = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    on_loop(claim_chunk(ctx.runs, ChunkRef("touched", 0), "a-dead-host", lease_seconds=0.2))
    time.sleep(1.2)
    from runs.sweep import look_at_run

    assert [due.ref.index for due in on_loop(look_at_run(ctx, "touched", time.time() + 0.5)).due] == [0]  # stalled
    held = on_loop(take_slot(slots, "touched", 1, "a-long-invocation", 600))
    on_loop(functions["redrive_chunk"](func.QueueMessage(body=ChunkRef("touched", 0).redrive_message().encode())))
    on_loop(held.set_lease(0.0))  # the slot is free again, and a copy of the chunk waits on the queue

    assert on_loop(look_at_run(ctx, "touched", time.time() + 0.5)).due == []  # touched at the hand-back: not stalled


def test_a_dead_letter_naming_more_chunks_than_a_sweep_takes_is_queued_in_parts_and_blocks_no_other(
    on_loop, functions, probe, monkeypatch, app_env, azurite
):
    monkeypatch.setenv("SWEEP_STALE_SECONDS", "3600")
    monkeypatch.setenv("SWEEP_MAX_REDRIVES", "2")
    start_run(on_loop, functions, monkeypatch, "lettered", 400)
    letters = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
        "eventgrid-deadletter"
    )
    letters.create_container()

    def event(index: int) -> dict:
        return {"subject": f"/blobServices/default/containers/chunks/blobs/lettered/{index:06d}.jsonl"}

    letters.upload_blob("t/a.json", json.dumps([event(0), event(1), event(2)]))
    letters.upload_blob("t/b.json", json.dumps([event(3)]))
    redrives = probe.queue_client(app_env["REDRIVE_QUEUE"])

    queued = []
    for _ in range(3):
        report = on_loop(sweep_once())
        queued.append((report.chunks_redriven, report.left_for_next_sweep))
        run_queued(on_loop, functions["redrive_chunk"], redrives)

    assert queued == [(2, 2), (2, 0), (0, 0)]  # a.json's first two, then its third and b.json's
    assert list(letters.list_blobs()) == []
    assert sorted(probe.drain()) == sorted(demo_ids(400))


def test_a_chunk_redriven_again_and_again_without_progress_is_marked_failed_and_runs_share_the_bound(
    on_loop, functions, probe, monkeypatch, app_env
):
    """Redrives that never arrive (as with a 403 on every send) stand in for a persistent failure."""
    from core.settings import SWEEP_GIVE_UP_AFTER

    monkeypatch.setenv("SWEEP_STALE_SECONDS", "1")
    monkeypatch.setenv("SWEEP_MAX_REDRIVES", "2")
    start_run(on_loop, functions, monkeypatch, "aaa-many", 300)  # three chunks, no event for any
    start_run(on_loop, functions, monkeypatch, "zzz-one", 100)
    time.sleep(1.1)
    redrives = probe.queue_client(app_env["REDRIVE_QUEUE"])

    first = on_loop(sweep_once())
    assert first.redriven == {"aaa-many": [0], "zzz-one": [0]}  # round-robin: the old run starves no other
    for message in redrives.receive_messages(max_messages=32):
        redrives.delete_message(message)  # lost: never ingested
    for _ in range(SWEEP_GIVE_UP_AFTER.default * 3):
        report = on_loop(sweep_once())
        for message in redrives.receive_messages(max_messages=32):
            redrives.delete_message(message)
        if report.failed:
            break
    assert report.failed == {"aaa-many": [0], "zzz-one": [0]}

    status = body_of(on_loop(functions["get_ingestion_status"](get_status("zzz-one"))))
    assert status["chunks"]["failed"] == 1
    assert "redrove this chunk" in status["failed_chunks"][0]["error"]
    answer = on_loop(functions["redrive_ingestion"](post_redrive("zzz-one")))  # by hand, once it is fixed
    assert answer.status_code in (200, 202), answer.get_body()
    run_queued(on_loop, functions["redrive_chunk"], redrives)
    assert sorted(probe.drain()) == sorted(demo_ids(100))


def test_a_completion_event_whose_sender_died_is_sent_by_one_sweep_and_only_once(
    on_loop, functions, probe, monkeypatch, app_env, azurite
):
    """Run "marked" died after marking its event `sending` and before sending it; every invocation of run
    "unsettled" died before settling it (no mark at all); run "sent" got its event as usual; run "legacy"
    has a mark from before marks said `sending` or `sent`: it was sent."""
    from core.contract import run_event_mark_blob
    from core.run_events import run_event
    from core.status import run_status
    from testkit.run_events import events_of

    stale = 600
    monkeypatch.setenv("SWEEP_STALE_SECONDS", str(stale))
    for run_id in ("marked", "unsettled", "sent", "legacy"):
        start_run(on_loop, functions, monkeypatch, run_id, 100)
        (name,) = probe.chunk_names(run_id)
        trigger(on_loop, functions, probe, name)
    assert [event["run_id"] for event in events_of(probe, app_env)] == ["marked", "unsettled", "sent", "legacy"]
    runs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("ingestion-runs")
    for run_id in ("unsettled", "marked"):
        runs.delete_blob(run_event_mark_blob(run_id))
    runs.upload_blob(run_event_mark_blob("legacy"), b"{}", overwrite=True)  # no metadata
    ctx = on_loop(app_context())
    status = on_loop(run_status(ctx.runs, "marked"))
    assert on_loop(ctx.runs.mark_event("marked", json.dumps(run_event(status, "2026-11-23T00:00:00.000Z")).encode()))

    young = on_loop(sweep_once(time.time()))  # quiet for less than SWEEP_STALE_SECONDS: its senders may live
    old = on_loop(sweep_once(time.time() + stale + 1))
    again = on_loop(sweep_once(time.time() + stale + 1))

    assert (young.events_sent, sorted(old.events_sent), again.events_sent) == ([], ["marked", "unsettled"], [])
    events = sorted(events_of(probe, app_env), key=lambda event: event["run_id"])  # runs are swept in any order
    assert [(event["run_id"], event["state"]) for event in events] == [
        ("marked", "completed"),
        ("unsettled", "completed"),
    ]
    assert events[0]["finished_at"] == "2026-11-23T00:00:00.000Z"  # the event as its sender marked it
    assert events[0]["messages"]["enqueued"] == 100
    assert on_loop(ctx.runs.event_mark("marked")).sending is False


def test_a_stalled_run_among_many_is_found_although_no_sweep_has_time_for_them_all(
    on_loop, functions, probe, monkeypatch, app_env
):
    """Runs are looked at in a random order: a sweep that runs out of time leaves other runs for the next,
    not the same ones (in name order, the newest run, last, was never reached)."""
    monkeypatch.setenv("SWEEP_STALE_SECONDS", "1")
    start_run(on_loop, functions, monkeypatch, "zz-newest-stalled", 100)  # its blob event was dropped
    ctx = on_loop(app_context())
    for index in range(60):
        on_loop(ctx.runs.create(RunRecord(f"aa-old-{index:03d}", "default", 10, state="chunked", chunks=0, messages=0)))
    time.sleep(1.1)
    ctx = replace(ctx, settings=replace(ctx.settings, sweep_time_budget=0.05))
    clock = itertools.count()  # each look at the clock takes 0.01 s: a few of the 61 runs a sweep, on any machine
    monkeypatch.setattr(sweeper, "time", SimpleNamespace(time=time.time, monotonic=lambda: next(clock) / 100))
    random.seed(3)

    found = [on_loop(sweeper.sweep(ctx)).redriven for _ in range(60)]

    assert any("zz-newest-stalled" in redriven for redriven in found)
