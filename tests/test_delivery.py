"""Messages as the consumer needs them, through the app's own functions against Azurite: batches, the
idempotency key, back-pressure on the consumer's backlog, the tolerated failure percentage, and bad input.

Every queue message is read back by an independent consumer (fanout/messages.py), never by the sender's
own counters. (Kills, doubled deliveries and redrives of every shape are drawn in tests/test_invariants.py.)
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest
from azure.functions.timer import TimerRequest

from chunking.request import parse_ingestion_request
from core.context import app_context
from core.contract import encode_chunk
from core.delivery import MAX_MESSAGE_BYTES
from core.run_store import RunRecord
from core.settings import Settings
from fanout.azurite import PROJECT_ROOT
from fanout.demo_api import demo_ids
from fanout.messages import Unpacked, unpack
from testkit.cli_runner import cli
from testkit.http_requests import body_of, chunk_blob, ingest_every_chunk, post_ingestion, run_queued, status_of


def _count(monkeypatch: pytest.MonkeyPatch, ids: int) -> None:
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("count=10000", f"count={ids}"))


def _unpacked(bodies: list[str], *, batched: bool, envelope: bool) -> list[Unpacked]:
    return [unpack(body, batched=batched, envelope=envelope) for body in bodies]


def test_batches_with_an_envelope_carry_every_id_once_in_the_sources_order(on_loop, functions, probe, monkeypatch):
    _count(monkeypatch, 2000)
    monkeypatch.setenv("QUEUE_MESSAGE_ENCODING", "base64")
    shape = {"batch_max_items": 500, "batch_max_bytes": 12_000, "batch_input": {"job": "nightly", "n": [1]},
             "envelope": True}  # fmt: skip
    started = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "batched", "chunk_size": 500, **shape})))
    assert started.status_code == 202, started.get_body()
    ingest_every_chunk(on_loop, functions, probe, "batched")

    raw = [message.content for message in probe.queue.receive_messages(messages_per_page=32, visibility_timeout=600)]
    assert all(len(base64.b64encode(text.encode())) <= 12_000 for text in raw)  # as the queue stores them
    messages = sorted(_unpacked(raw, batched=True, envelope=True), key=lambda message: message.first_seq or 0)
    assert all(1 <= len(message.items) < 500 for message in messages)  # the byte limit closes every batch
    assert {message.run_id for message in messages} == {"batched"}
    assert all(message.batch_input == {"job": "nightly", "n": [1]} for message in messages)
    items = [item for message in messages for item in message.items]
    assert items == demo_ids(2000)  # each once, and in order: first_seq + i is the item's place in the source
    assert [m.first_seq for m in messages] == [sum(len(p.items) for p in messages[:k]) for k in range(len(messages))]
    # a batch never spans chunks: each chunk's 500 items start a message
    assert {0, 500, 1000, 1500} <= {message.first_seq for message in messages}

    status = status_of(on_loop, functions, "batched")
    assert status["state"] == "completed"
    assert status["messages"]["enqueued"] == 2000 and status["messages"]["queue_messages"] == len(messages)
    assert status["delivery"] == {"batch_max_items": 500, "batch_max_bytes": 12_000,
                                  "batch_input": {"job": "nightly", "n": [1]}, "envelope": True}  # fmt: skip
    assert sum(status["messages_by_queue"].values()) == len(messages)


def test_no_field_and_no_setting_leaves_every_message_as_it_was(on_loop, functions, probe, monkeypatch):
    _count(monkeypatch, 300)
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "plain-shape", "chunk_size": 100})))
    ingest_every_chunk(on_loop, functions, probe, "plain-shape")
    assert sorted(probe.drain()) == sorted(demo_ids(300))  # the ID's text, nothing around it


def test_a_run_keeps_its_shape_when_the_defaults_change_under_it(on_loop, functions, probe, app_env, monkeypatch):
    _count(monkeypatch, 400)
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "kept-shape", "chunk_size": 100,
                                                          "batch_max_items": 10})))  # fmt: skip
    monkeypatch.setenv("MESSAGE_BATCH_MAX_ITEMS", "1")
    monkeypatch.setenv("MESSAGE_ENVELOPE", "true")
    monkeypatch.setenv("QUEUE_MAX_BACKLOG", "1")
    ingest_every_chunk(on_loop, functions, probe, "kept-shape")

    messages = _unpacked(probe.drain(), batched=True, envelope=False)
    assert len(messages) == 40 and all(len(message.items) == 10 for message in messages)
    assert sorted(item for message in messages for item in message.items) == sorted(demo_ids(400))
    assert status_of(on_loop, functions, "kept-shape")["state"] == "completed"


def test_a_run_waits_on_its_backlog_without_failing_and_completes_once_the_consumer_drains(
    on_loop, functions, probe, app_env, monkeypatch
):
    _count(monkeypatch, 600)
    monkeypatch.setenv("INGEST_CHECKPOINT_EVERY", "20")
    monkeypatch.setenv("INGEST_CONCURRENCY", "4")
    monkeypatch.setenv("BACKLOG_RETRY_SECONDS", "1")
    monkeypatch.setenv("SWEEP_STALE_SECONDS", "1")
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "backlog", "chunk_size": 300, "max_backlog": 50})))
    ingest_every_chunk(on_loop, functions, probe, "backlog")  # no consumer: each chunk stops near the bound

    held = probe.queue_length()
    assert 50 < held <= 50 + 2 * (20 + 4), held  # past the bound by at most a checkpoint's sends a chunk
    status = status_of(on_loop, functions, "backlog")
    assert status["state"] == "ingesting" and status["chunks"]["waiting"] == 2, status
    assert status["backlog"]["waiting_chunks"] == 2 and status["backlog"]["queues"] == status["messages_by_queue"]
    time.sleep(1.2)
    on_loop(functions["sweep_stalled_chunks"](TimerRequest()))  # a waiting chunk is no stalled one: left alone
    assert status_of(on_loop, functions, "backlog")["chunks"]["failed"] == 0

    redrives, received = probe.queue_client(app_env["REDRIVE_QUEUE"]), probe.consume()
    deadline = time.monotonic() + 60
    while status_of(on_loop, functions, "backlog")["state"] != "completed":
        assert time.monotonic() < deadline, status_of(on_loop, functions, "backlog")
        time.sleep(1.1)  # the hand-back is hidden BACKLOG_RETRY_SECONDS
        run_queued(on_loop, functions["redrive_chunk"], redrives)
        received += probe.consume()  # the consumer, between the chunk's looks
    assert sorted(received) == sorted(demo_ids(600))  # nothing lost, nothing sent twice by the pauses
    assert status_of(on_loop, functions, "backlog").get("backlog") is None


def test_fanout_run_waits_in_process_for_the_consumer(app_env, probe, monkeypatch, tmp_path):
    _count(monkeypatch, 200)
    monkeypatch.setenv("BACKLOG_RETRY_SECONDS", "1")
    monkeypatch.setenv("INGEST_CHECKPOINT_EVERY", "10")
    command = [sys.executable, "-m", "fanout", "run", "--run-id", "waits-here", "--chunk-size", "100",
               "--max-backlog", "30", "--parallel", "1"]  # fmt: skip
    runner = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    received: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while runner.poll() is None:
            assert time.monotonic() < deadline
            assert probe.queue_length() <= 30 + 10 + int(os.environ.get("INGEST_CONCURRENCY", "64"))
            time.sleep(1.5)
            received += probe.consume()
    finally:
        output, _ = runner.communicate(timeout=60)
    received += probe.consume()
    assert runner.returncode == 0, output
    assert "max_backlog" in output  # it said why it waited
    assert sorted(received) == sorted(demo_ids(200))


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"batch_max_items": 0}, "batch_max_items"),
        ({"batch_max_items": 5001}, "batch_max_items"),
        ({"batch_max_items": 10, "batch_max_bytes": MAX_MESSAGE_BYTES + 1}, "batch_max_bytes"),
        ({"batch_max_items": 10, "batch_max_bytes": 100}, "batch_max_bytes"),
        ({"batch_max_items": 10, "batch_max_bytes": 2000, "batch_input": {"a": 1}}, "batch_max_bytes"),
        ({"batch_max_items": 10, "batch_input": [1]}, "batch_input"),
        ({"batch_max_items": 10, "batch_input": {"pad": "x" * 9000}}, "batch_input"),
        ({"batch_input": {"a": 1}}, "batch_input"),  # no batches to carry it
        ({"max_backlog": -1}, "max_backlog"),
        ({"max_failed_percent": 101}, "max_failed_percent"),
        ({"max_failed_percent": -1}, "max_failed_percent"),
        ({"envelope": "yes"}, "envelope"),
        ({"envelope": 1}, "envelope"),
    ],
)
def test_bad_delivery_fields_are_refused_naming_the_field(on_loop, functions, probe, fields, named):
    response = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "refused", **fields})))
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    problem = body_of(response)
    assert problem["field"] == named and named in problem["detail"], problem
    assert probe.chunk_names("refused") == []  # nothing started


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--batch-max-items", "0"], "batch_max_items"),
        (["--batch-max-items", "10", "--batch-input", "[1]"], "batch_input"),
        (["--batch-input", "not json"], "--batch-input"),
        (["--max-failed-percent", "200"], "max_failed_percent"),
        (["--max-backlog", "-5"], "max_backlog"),
        (["--batch-max-items", "10", "--batch-max-bytes", "100"], "batch_max_bytes"),
    ],
)
def test_the_cli_refuses_bad_delivery_flags_with_exit_2(app_env, flags, named):
    finished = cli("run", "--run-id", "cli-refused", *flags, env={})
    assert finished.returncode == 2, finished
    assert named in finished.stderr and "Traceback" not in finished.stderr + finished.stdout


def test_the_cli_turns_an_envelope_default_off_with_no_envelope(app_env, probe, monkeypatch):
    _count(monkeypatch, 20)
    finished = cli("run", "--run-id", "no-envelope", "--no-envelope", env={"MESSAGE_ENVELOPE": "true"})
    assert finished.returncode == 0, finished
    assert sorted(probe.consume()) == sorted(demo_ids(20))  # each message the ID alone


def test_a_failure_percentage_fails_the_run_whichever_threshold_passes_first(on_loop, functions, probe, monkeypatch):
    """Ten chunks, the last two failing (an item too big for a message, LARGE_MESSAGE_MODE=reject): 20% of the
    chunks. A run that tolerates 5 chunks but 10% fails; one that tolerates 5 chunks and 30% completes."""
    monkeypatch.setenv("LARGE_MESSAGE_MODE", "reject")
    ctx = on_loop(app_context())
    outcomes = {}
    for run_id, percent in (("percent-10", 10), ("percent-30", 30)):
        record = RunRecord(run_id, "default", 5, state="chunked", chunks=10, messages=50, max_failed_chunks=5,
                           max_failed_percent=percent)  # fmt: skip
        on_loop(ctx.runs.create(record))
        for index in range(10):
            items = [f"{run_id}-{index}-{k}" for k in range(4)] + ["x" * (70_000 if index >= 8 else 1)]
            name = f"{run_id}/{index:06d}.jsonl"
            probe.chunks.upload_blob(name, encode_chunk(items), metadata={"message_count": "5"}, overwrite=True)
            on_loop(functions["ingest_chunk"](chunk_blob("chunks", name, encode_chunk(items))))
        outcomes[run_id] = status_of(on_loop, functions, run_id)
    assert outcomes["percent-10"]["state"] == "failed" and outcomes["percent-10"]["chunks"]["failed"] == 2
    assert outcomes["percent-30"]["state"] == "completed" and outcomes["percent-30"]["chunks"]["failed"] == 2
    assert outcomes["percent-10"]["max_failed_percent"] == 10
    assert json.dumps(outcomes["percent-10"]).count("LARGE_MESSAGE_MODE") >= 1  # why, on the failed chunks


@pytest.mark.parametrize(("fields", "chunk_size"), [
    ({}, 5000), ({"batch_max_items": 1}, 5000), ({"batch_max_items": 2}, 10_000), ({"batch_max_items": 100}, 32_000),
    ({"batch_max_items": 100, "chunk_size": 700}, 700), ({"envelope": True}, 5000),
])  # fmt: skip
def test_a_batched_run_chunks_about_chunk_size_messages_worth_unless_it_says(fields, chunk_size):
    assert parse_ingestion_request(json.dumps(fields).encode(), Settings.from_env({})).chunk_size == chunk_size


def test_a_batched_runs_default_chunk_holds_chunk_size_messages_worth(on_loop, functions, probe, monkeypatch):
    """The default chunk of a batched run carries its bookkeeping over CHUNK_SIZE messages: 10,000 IDs at 100 a
    message with CHUNK_SIZE 50 make 2 chunks of 50 messages (200 chunks of 50 IDs before)."""
    _count(monkeypatch, 10_000)
    monkeypatch.setenv("CHUNK_SIZE", "50")
    answer = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "big-chunks", "batch_max_items": 100})))
    assert answer.status_code == 202, answer.get_body()
    assert len(probe.chunk_names("big-chunks")) == 2
    ingest_every_chunk(on_loop, functions, probe, "big-chunks")
    status = status_of(on_loop, functions, "big-chunks")
    assert (status["state"], status["messages"]["enqueued"], status["messages"]["queue_messages"]) == (
        "completed", 10_000, 100)  # fmt: skip
    assert len(probe.consume()) == 100
