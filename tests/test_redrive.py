"""Redrive over HTTP schedules, the `redrive_chunk` queue trigger does the work: the request answers
`202` with the chunks it scheduled, whatever the run's size."""

from __future__ import annotations

import os

import azure.functions as func

from api.http import PROBLEM_JSON
from fanout.demo_api import demo_ids
from testkit.http_requests import body_of, chunk_blob, get_status, post_ingestion, post_redrive, run_queued


def test_redrive_answers_202_with_what_it_scheduled_and_the_trigger_ingests_each_once(
    on_loop, functions, probe, monkeypatch, app_env
):
    """Chunk 0 ingested, chunk 1 failed (then fixed), chunk 2 never started: 1 and 2 are redriven."""
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "3000"))
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "redriven", "chunk_size": 1000})))
    first, broken, _ = probe.chunk_names("redriven")
    download = probe.chunks.download_blob(first)
    on_loop(functions["ingest_chunk"](chunk_blob("chunks", first, download.readall(), download.properties.metadata)))
    on_loop(functions["ingest_chunk"](chunk_blob("chunks", broken, b"{broken\n", {"message_count": "1"})))

    answer = on_loop(functions["redrive_ingestion"](post_redrive("redriven")))

    assert answer.status_code == 202, answer.get_body()
    assert answer.headers["Location"] == "/api/ingestions/redriven"
    assert body_of(answer) == {
        "run_id": "redriven", "status_url": "http://localhost:7071/api/ingestions/redriven", "scheduled": [1, 2],
        "chunking_resumed": False,
    }  # fmt: skip
    assert probe.queue_length() == 1000  # the request itself sent nothing

    redrives = probe.queue_client(app_env["REDRIVE_QUEUE"])
    assert run_queued(on_loop, functions["redrive_chunk"], redrives, times=2) == 2  # at least once: twice here
    assert sorted(probe.drain()) == sorted(demo_ids(3000))
    assert body_of(on_loop(functions["get_ingestion_status"](get_status("redriven"))))["state"] == "completed"


def test_a_run_with_nothing_to_redrive_schedules_nothing(on_loop, functions, probe, monkeypatch, app_env):
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "10"))
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "all-done"})))
    (name,) = probe.chunk_names("all-done")
    download = probe.chunks.download_blob(name)
    on_loop(functions["ingest_chunk"](chunk_blob("chunks", name, download.readall(), download.properties.metadata)))

    answer = on_loop(functions["redrive_ingestion"](post_redrive("all-done")))

    assert (answer.status_code, body_of(answer)["scheduled"]) == (202, [])
    assert run_queued(on_loop, functions["redrive_chunk"], probe.queue_client(app_env["REDRIVE_QUEUE"])) == 0


def test_a_redrive_message_that_names_no_chunk_is_dropped_with_a_log_line(on_loop, functions, app_env, caplog):
    for body in [b"not json", b'{"run_id": "../x", "index": 0}', b'{"run_id": "x", "index": -1}']:
        on_loop(functions["redrive_chunk"](func.QueueMessage(body=body)))

    assert [record.levelname for record in caplog.records if "not a chunk redrive" in record.getMessage()] == [
        "ERROR"
    ] * 3


def test_redrive_of_an_unknown_run_answers_404(on_loop, functions, app_env):
    answer = on_loop(functions["redrive_ingestion"](post_redrive("nobody")))

    assert answer.status_code == 404 and answer.mimetype == PROBLEM_JSON
