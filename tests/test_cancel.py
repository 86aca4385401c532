"""Cancel: chunking stops at its next page, every chunk at its next checkpoint, sending nothing more; the
run is `cancelled` with the counts sent so far, and a redrive resumes it to the end."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Iterator

import pytest

from api.http import PROBLEM_JSON
from core.context import app_context
from core.contract import ChunkRef
from core.run_store import chunks_written
from fanout.demo_api import DemoApi, Faults, demo_ids
from testkit.chunked_runs import delivered
from testkit.cli_runner import cli
from testkit.http_requests import (
    body_of,
    get_status,
    ingest_every_chunk,
    post_cancel,
    post_ingestion,
    post_redrive,
    run_queued,
)
from testkit.run_events import events_of

EVERY, WINDOW = 50, 4


@pytest.fixture
def checkpointed(monkeypatch, app_env) -> dict[str, str]:
    """Checkpoints every 50 messages, 4 in flight: a cancel is seen within two checkpoints."""
    monkeypatch.setenv("INGEST_CHECKPOINT_EVERY", str(EVERY))
    monkeypatch.setenv("INGEST_CONCURRENCY", str(WINDOW))
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "3000"))
    return app_env


def test_cancel_mid_run_stops_sending_within_a_checkpoint_and_a_redrive_finishes_it(
    on_loop, functions, probe, checkpointed
):
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "cancel-mid", "chunk_size": 1500})))
    first, second = probe.chunk_names("cancel-mid")

    async def cancel_while_sending() -> tuple[int, object]:
        runs = (await app_context()).runs
        sending = asyncio.create_task(functions["ingest_chunk"](delivered(probe, first)))
        while (status := await runs.chunk_status(ChunkRef("cancel-mid", 0))) is None or status.sent < EVERY:
            await asyncio.sleep(0.005)
        answer = await functions["cancel_ingestion"](post_cancel("cancel-mid"))
        await sending
        return status.sent, answer

    sent_before, answer = on_loop(cancel_while_sending())

    assert answer.status_code == 202, answer.get_body()
    assert (answer.headers["Location"], body_of(answer)["state"]) == ("/api/ingestions/cancel-mid", "cancelled")
    sent = probe.queue_length()
    assert sent <= sent_before + 2 * EVERY + WINDOW < 1500  # stopped at the next checkpoint, not at the end
    on_loop(functions["ingest_chunk"](delivered(probe, second)))  # its event arrives late: it sends nothing
    assert probe.queue_length() == sent

    status = body_of(on_loop(functions["get_ingestion_status"](get_status("cancel-mid"))))
    assert status["state"] == "cancelled" and status["cancelled_at"]
    assert status["chunks"] | {"total": 2} == {
        "total": 2,
        "ingested": 0,
        "failed": 0,
        "ingesting": 0,
        "stopped": 2,
        "waiting": 0,
    }
    assert status["messages"] == {
        "fetched": 3000,
        "enqueued": sent,
        "send_retries": 0,
        "queue_messages": sent,
    }  # exactly what the queue holds
    (event,) = events_of(probe, checkpointed)
    assert (event["run_id"], event["state"], event["messages"]["enqueued"]) == ("cancel-mid", "cancelled", sent)

    redrive = on_loop(functions["redrive_ingestion"](post_redrive("cancel-mid")))
    assert body_of(redrive)["scheduled"] == [0, 1]
    run_queued(on_loop, functions["redrive_chunk"], probe.queue_client(checkpointed["REDRIVE_QUEUE"]))

    bodies = probe.drain()
    assert len(bodies) == 3000 and set(bodies) == set(demo_ids(3000))  # resumed where it stopped: no repeats
    assert body_of(on_loop(functions["get_ingestion_status"](get_status("cancel-mid"))))["state"] == "completed"
    assert [event["state"] for event in events_of(probe, checkpointed)] == ["completed"]


@pytest.fixture
def slow_pages(monkeypatch, app_env) -> Iterator[dict[str, str]]:
    """A paged source taking 50 ms a page of 100, chunked 500 at a time; a control queue of this test's own."""
    api = DemoApi(count=3000, page_size=100, pagination="page", faults=Faults(delay=0.05)).start()
    env = {"SOURCE_URL": api.url, "SOURCE_PAGINATION": "page", "SOURCE_ITEMS_PATH": "data",
           "SOURCE_PAGE_SIZE": "100", "CONTROL_QUEUE": f"continuations-{secrets.token_hex(6)}"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield {**app_env, **env}
    api.stop()


def test_cancel_while_chunking_stops_at_the_next_page_and_a_redrive_carries_chunking_on(
    on_loop, functions, probe, slow_pages
):
    async def cancel_while_chunking() -> tuple[object, object]:
        ctx = await app_context()
        chunking = asyncio.create_task(
            functions["start_ingestion"](post_ingestion({"run_id": "cancel-chunking", "chunk_size": 500}))
        )
        while not await chunks_written(ctx.chunk_container, "cancel-chunking"):
            await asyncio.sleep(0.01)
        cancelled = await functions["cancel_ingestion"](post_cancel("cancel-chunking"))
        return cancelled, await chunking

    cancelled, started = on_loop(cancel_while_chunking())

    assert cancelled.status_code == 202 and started.status_code == 202
    assert body_of(started)["state"] == "chunking"
    written = probe.chunk_names("cancel-chunking")
    assert 1 <= len(written) <= 2 < 6  # the page after the cancel was the last one read
    control = probe.queue_client(slow_pages["CONTROL_QUEUE"])
    control.create_queue()  # unless chunking handed on, which it must not have
    assert run_queued(on_loop, functions["continue_chunking"], control) == 0  # nothing handed on
    ingest_every_chunk(on_loop, functions, probe, "cancel-chunking")
    assert probe.queue_length() == 0  # its chunks stop before they send
    status = body_of(on_loop(functions["get_ingestion_status"](get_status("cancel-chunking"))))
    assert (status["state"], status["messages"]["enqueued"]) == ("cancelled", 0)
    assert [event["state"] for event in events_of(probe, slow_pages)] == ["cancelled"]

    redrive = on_loop(functions["redrive_ingestion"](post_redrive("cancel-chunking")))
    assert body_of(redrive)["scheduled"] == list(range(len(written)))
    assert run_queued(on_loop, functions["continue_chunking"], control) == 1  # chunking carries on, to the end
    run_queued(on_loop, functions["redrive_chunk"], probe.queue_client(slow_pages["REDRIVE_QUEUE"]))
    assert len(ingest_every_chunk(on_loop, functions, probe, "cancel-chunking")) == 6

    assert sorted(probe.drain()) == sorted(demo_ids(3000))
    assert body_of(on_loop(functions["get_ingestion_status"](get_status("cancel-chunking"))))["state"] == "completed"
    assert [event["state"] for event in events_of(probe, slow_pages)] == ["completed"]


def test_a_finished_run_cannot_be_cancelled_and_an_unknown_one_is_not_found(on_loop, functions, probe, monkeypatch):
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "10"))
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "done-already"})))
    ingest_every_chunk(on_loop, functions, probe, "done-already")

    finished = on_loop(functions["cancel_ingestion"](post_cancel("done-already")))
    unknown = on_loop(functions["cancel_ingestion"](post_cancel("nobody-here")))

    assert (finished.status_code, finished.mimetype) == (409, PROBLEM_JSON)
    assert "has completed and cannot be cancelled" in body_of(finished)["detail"]
    assert (unknown.status_code, unknown.mimetype) == (404, PROBLEM_JSON)


def test_cli_cancels_a_run_paused_mid_chunking_and_its_redrive_chunks_and_ingests_the_rest(
    on_loop, functions, probe, slow_pages, monkeypatch
):
    """Over HTTP with no time budget, chunking hands the rest on at once; cancelled before that continuation
    runs, the command line's redrive chunks the rest itself and ingests every chunk."""
    monkeypatch.setenv("CHUNKING_TIME_BUDGET", "0")
    started = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "cli-cancel", "chunk_size": 500})))
    assert body_of(started)["state"] == "chunking"

    cancelled = cli("cancel", "cli-cancel", env=slow_pages)
    again = cli("cancel", "cli-cancel", "--json", env=slow_pages)
    redriven = cli("redrive", "cli-cancel", "--json", env=slow_pages)

    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith("cli-cancel: cancelled, 0 messages enqueued so far")
    assert again.returncode == 0 and json.loads(again.stdout)["state"] == "cancelled"  # cancelling twice is fine
    assert redriven.returncode == 0, redriven.stderr
    assert json.loads(redriven.stdout)["messages_queued"] == 3000
    assert sorted(probe.drain()) == sorted(demo_ids(3000))
    assert [event["state"] for event in events_of(probe, slow_pages)] == ["cancelled", "completed"]
    finished = cli("cancel", "cli-cancel", env=slow_pages)
    assert finished.returncode == 2 and "has completed and cannot be cancelled" in finished.stderr
