"""`max_concurrency` caps the chunk invocations ingesting one run at once; a chunk that finds no slot
goes back on the redrive queue for later and is never lost."""

from __future__ import annotations

import asyncio
import os
import time

from api.http import PROBLEM_JSON
from core.context import app_context
from fanout.demo_api import demo_ids
from ingestion.slots import slot_states, take_slot
from testkit.http_requests import body_of, chunk_blob, post_ingestion, run_queued


def start(on_loop, functions, monkeypatch, run_id: str, count: int, **body) -> None:
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", str(count)))
    answer = on_loop(functions["start_ingestion"](post_ingestion({"run_id": run_id, "chunk_size": 100, **body})))
    assert answer.status_code == 202, answer.get_body()


def delivered(probe, name: str):
    download = probe.chunks.download_blob(name)
    return chunk_blob("chunks", name, download.readall(), download.properties.metadata)


def test_chunks_over_the_cap_wait_on_the_redrive_queue_and_all_arrive_once(
    on_loop, functions, probe, monkeypatch, app_env
):
    monkeypatch.setenv("THROTTLE_RETRY_SECONDS", "1")
    start(on_loop, functions, monkeypatch, "capped", 300, max_concurrency=1)
    ctx = on_loop(app_context())
    runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    held = on_loop(take_slot(runs, "capped", 1, "a-slow-invocation", lease_seconds=600))  # the run's one slot

    for name in probe.chunk_names("capped"):  # three trigger calls: none may start
        on_loop(functions["ingest_chunk"](delivered(probe, name)))

    assert probe.queue_length() == 0
    redrives = probe.queue_client(app_env["REDRIVE_QUEUE"])
    assert redrives.get_queue_properties().approximate_message_count == 3  # handed back, hidden for a second
    on_loop(held.set_lease(0.0))  # the slow invocation ends
    time.sleep(1.2)
    assert run_queued(on_loop, functions["redrive_chunk"], redrives) == 3
    assert sorted(probe.drain()) == sorted(demo_ids(300))
    assert all(state.lease_until == 0 for state in on_loop(slot_states(runs, "capped")).values())  # slots freed


def test_racing_invocations_of_a_capped_run_take_no_more_slots_than_the_cap(
    on_loop, functions, probe, monkeypatch, app_env
):
    monkeypatch.setenv("THROTTLE_RETRY_SECONDS", "1")
    start(on_loop, functions, monkeypatch, "raced", 400, max_concurrency=2)
    names = probe.chunk_names("raced")

    async def all_at_once() -> None:
        await asyncio.gather(*(functions["ingest_chunk"](delivered(probe, name)) for name in names))

    on_loop(all_at_once())

    ctx = on_loop(app_context())
    runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    assert sorted(on_loop(slot_states(runs, "raced"))) == [0, 1]  # two slots ever existed: the cap
    time.sleep(1.2)
    run_queued(on_loop, functions["redrive_chunk"], probe.queue_client(app_env["REDRIVE_QUEUE"]))
    assert sorted(probe.drain()) == sorted(demo_ids(400))


def test_max_concurrency_must_be_a_whole_number_up_to_1000(on_loop, functions, app_env):
    for bad in [-1, 1001, "2", 1.5, True]:
        answer = on_loop(functions["start_ingestion"](post_ingestion({"max_concurrency": bad})))
        assert (answer.status_code, answer.mimetype) == (400, PROBLEM_JSON)
        assert body_of(answer)["field"] == "max_concurrency"
