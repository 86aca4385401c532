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
from azure.storage.queue import QueueClient

from api.openapi import openapi_document
from chunking.request import parse_ingestion_request
from core.context import app_context
from core.errors import RequestError
from core.settings import Settings
from fanout.azurite import start_azurite
from ingestion.slots import take_slot
from runs.local import ingest_pending_chunks
from runs.redrive import redrive_run
from runs.sweep import sweep
from testkit.chunked_runs import delivered, write_chunked_run
from testkit.http_requests import body_of, get_status, post_ingestion, post_redrive, status_of
from testkit.storage_probe import StorageProbe

OVERSIZED = "x" * 70_000  # refused under LARGE_MESSAGE_MODE=reject


def _fill(probe: StorageProbe, messages: int = 10) -> None:
    """Another producer's backlog in the target queue."""
    with contextlib.suppress(Exception):
        probe.queue.create_queue()
    for k in range(messages):
        probe.queue.send_message(base64.b64encode(f"other-{k}".encode()).decode())


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
    name = write_chunked_run(on_loop, probe, "fail-after-wait", ["a", "b", OVERSIZED], max_backlog=3)
    _fill(probe)
    on_loop(functions["ingest_chunk"](delivered(probe, name)))
    assert status_of(on_loop, functions, "fail-after-wait")["chunks"]["waiting"] == 1
    probe.consume()
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
    write_chunked_run(on_loop, probe, "local-fail", ["a", "b", OVERSIZED], max_backlog=3)
    _fill(probe)
    threading.Timer(1.5, probe.consume).start()  # the consumer catches up 1.5 s in
    said: list[str] = []
    on_loop(asyncio.wait_for(ingest_pending_chunks(on_loop(app_context()), "local-fail", said.append), timeout=20))
    assert any("waits" in line for line in said) and "failed" in said[-1], said


def test_a_redrive_here_waits_for_the_backlog_and_a_scheduled_one_adds_no_copy(
    on_loop, functions, probe, app_env, monkeypatch
):
    monkeypatch.setenv("BACKLOG_RETRY_SECONDS", "1")
    monkeypatch.setenv("LARGE_MESSAGE_MODE", "reject")
    items = [f"id-{k}" for k in range(5)]
    name = write_chunked_run(on_loop, probe, "redrive-wait", [*items, OVERSIZED], max_backlog=3)
    on_loop(functions["ingest_chunk"](delivered(probe, name)))
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

    threading.Timer(1.5, probe.consume).start()
    result = on_loop(asyncio.wait_for(redrive_run(on_loop(app_context()), "redrive-wait", here=True), timeout=30))
    assert result.to_json()["chunks"][0]["state"] == "ingested", result.to_json()
    assert status_of(on_loop, functions, "redrive-wait")["state"] == "completed"


def test_a_claim_checked_item_is_stored_as_its_text_whatever_the_shape(on_loop, functions, probe, azurite):
    big = 'q"' * 30_000  # its JSON line is 90,002 bytes, its text 60,000
    stored = {}
    for run_id, fields in (("cc-plain", {}), ("cc-envelope", {"envelope": True}), ("cc-batch", {"batch_max_items": 5})):
        name = write_chunked_run(on_loop, probe, run_id, ["small", big], **fields)
        on_loop(functions["ingest_chunk"](delivered(probe, name)))
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


def _deliver_redrives(on_loop, functions, probe: StorageProbe, queue: str, max_dequeue: int = 5) -> int:
    """The host's queue trigger: each visible message to `redrive_chunk`, tried up to maxDequeueCount."""
    redrives, handled = probe.queue_client(queue), 0
    for message in list(redrives.receive_messages(max_messages=32)):
        for _ in range(max_dequeue):
            with contextlib.suppress(Exception):
                on_loop(functions["redrive_chunk"](func.QueueMessage(body=message.content.encode())))
                break
        redrives.delete_message(message)
        handled += 1
    return handled


def test_a_waiting_chunk_whose_hand_back_finds_no_slot_comes_back_when_one_is_free(
    on_loop, functions, probe, app_env, monkeypatch
):
    monkeypatch.setenv("BACKLOG_RETRY_SECONDS", "3")
    monkeypatch.setenv("THROTTLE_RETRY_SECONDS", "1")
    queue = app_env["REDRIVE_QUEUE"]
    name = write_chunked_run(
        on_loop, probe, "slot-wait", [f"id-{k}" for k in range(5)], max_backlog=3, max_concurrency=1
    )
    _fill(probe)
    on_loop(functions["ingest_chunk"](delivered(probe, name)))
    assert status_of(on_loop, functions, "slot-wait")["chunks"]["waiting"] == 1
    ctx = on_loop(app_context())
    slots = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    assert on_loop(take_slot(slots, "slot-wait", 1, "another-chunk", 3.6)) is not None  # the run's one slot, taken
    time.sleep(3.1)
    assert _deliver_redrives(on_loop, functions, probe, queue) == 1  # its hand-back finds no slot: handed back
    probe.consume()  # the consumer drains meanwhile

    deadline = time.monotonic() + 12
    while status_of(on_loop, functions, "slot-wait")["state"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.5)
        _deliver_redrives(on_loop, functions, probe, queue)
    assert status_of(on_loop, functions, "slot-wait")["state"] == "completed"


def test_a_waiting_chunk_whose_look_keeps_failing_ends_failed_by_the_sweeper(
    on_loop, functions, probe, app_env, monkeypatch
):
    """A target account refuses the app (a rotated key: 403) while a chunk waits: its looks fail, so it is no
    longer waiting but failing, and the sweeper fails it after SWEEP_GIVE_UP_AFTER redrives without progress; the
    status answers meanwhile, its backlog saying the queues could not be counted."""
    second = start_azurite()
    try:
        monkeypatch.setenv("BACKLOG_RETRY_SECONDS", "1")
        monkeypatch.setenv("SWEEP_GIVE_UP_AFTER", "2")
        monkeypatch.setenv("STORAGE_MAX_RETRIES", "0")
        monkeypatch.setenv("SECOND_ACCOUNT", second.connection_string)
        monkeypatch.setenv("QUEUE_ACCOUNTS", "AzureWebJobsStorage,SECOND_ACCOUNT")
        name = write_chunked_run(on_loop, probe, "look-fails", [f"id-{k}" for k in range(5)], max_backlog=3)
        _fill(probe)
        on_loop(functions["ingest_chunk"](delivered(probe, name)))
        assert status_of(on_loop, functions, "look-fails")["chunks"]["waiting"] == 1
        key = next(part for part in second.connection_string.split(";") if part.startswith("AccountKey="))
        rotated = "AccountKey=" + base64.b64encode(b"rotated" * 9).decode()
        monkeypatch.setenv("SECOND_ACCOUNT", second.connection_string.replace(key, rotated))
        while_refused = on_loop(functions["get_ingestion_status"](get_status("look-fails")))
        time.sleep(1.2)
        _deliver_redrives(on_loop, functions, probe, app_env["REDRIVE_QUEUE"])
        for day in range(1, 6):  # more sweeps than SWEEP_GIVE_UP_AFTER, each long after the last
            on_loop(sweep(on_loop(app_context()), now=time.time() + day * 86_400))
            _deliver_redrives(on_loop, functions, probe, app_env["REDRIVE_QUEUE"])
        status = status_of(on_loop, functions, "look-fails")
    finally:
        second.close()

    assert while_refused.status_code == 202 and body_of(while_refused)["backlog"]["queues"] is None
    assert "could not be counted" in body_of(while_refused)["backlog"]["warning"]
    assert status["state"] == "failed" and status["chunks"]["failed"] == 1, status


def test_a_batch_input_with_what_xml_cannot_carry_reaches_every_message_unencoded(
    on_loop, functions, probe, monkeypatch
):
    monkeypatch.setenv("QUEUE_MESSAGE_ENCODING", "none")
    shape = {"tag": "\uffff\ufffe", "ctl": "\u0001"}
    name = write_chunked_run(on_loop, probe, "xml-input", [f"id-{k}" for k in range(7)], batch_max_items=2,
                      batch_input=shape)  # fmt: skip
    on_loop(functions["ingest_chunk"](delivered(probe, name)))

    stored = QueueClient.from_connection_string(probe.connection_string, probe.queue.queue_name)  # as stored
    messages = [json.loads(message.content) for message in stored.receive_messages(max_messages=32)]
    assert status_of(on_loop, functions, "xml-input")["state"] == "completed"
    assert len(messages) == 4 and all(message["batch_input"] == shape for message in messages)
