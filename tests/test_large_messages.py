"""Messages over 64 KiB after encoding: stored as a blob behind a claim check, or the chunk is rejected."""

from __future__ import annotations

import json

from azure.storage.blob import BlobClient

from testkit.chunked_runs import BIG, delivered, write_chunked_run
from testkit.http_requests import body_of, get_status, post_redrive, run_queued


def test_oversized_message_is_sent_as_a_claim_check(on_loop, functions, probe, azurite):
    name = write_chunked_run(on_loop, probe, "claim-check", ["small", BIG])
    on_loop(functions["ingest_chunk"](delivered(probe, name)))

    small, reference = sorted(probe.drain())
    assert small == "small"
    claim_check = json.loads(reference)["claim_check"]
    assert (claim_check["container"], claim_check["bytes"]) == ("large-messages", 50_000)
    blob = BlobClient.from_connection_string(azurite.connection_string, claim_check["container"], claim_check["blob"])
    assert blob.download_blob().readall().decode() == BIG


def test_rejected_oversized_message_fails_the_chunk_and_redrive_completes_it(
    on_loop, functions, probe, monkeypatch, app_env
):
    monkeypatch.setenv("LARGE_MESSAGE_MODE", "reject")
    name = write_chunked_run(on_loop, probe, "reject-big", ["small", BIG, "after"])
    on_loop(functions["ingest_chunk"](delivered(probe, name)))

    status = body_of(on_loop(functions["get_ingestion_status"](get_status("reject-big"))))
    assert status["state"] == "failed"
    assert status["failed_chunks"] == [
        {"index": 0, "error": "line 2: message is 66668 bytes after base64 encoding, over the queue's 65536-byte "
                              "limit (LARGE_MESSAGE_MODE=reject; set claim-check to store it as a blob)"}
    ]  # fmt: skip
    assert probe.queue_length() == 0

    monkeypatch.setenv("LARGE_MESSAGE_MODE", "claim-check")
    answer = on_loop(functions["redrive_ingestion"](post_redrive("reject-big")))

    assert (answer.status_code, body_of(answer)["scheduled"]) == (202, [0])
    assert run_queued(on_loop, functions["redrive_chunk"], probe.queue_client(app_env["REDRIVE_QUEUE"])) == 1
    assert body_of(on_loop(functions["get_ingestion_status"](get_status("reject-big"))))["state"] == "completed"
    assert probe.queue_length() == 3
