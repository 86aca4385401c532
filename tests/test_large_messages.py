"""Messages over 64 KiB after encoding: stored as a blob behind a claim check, or the chunk is rejected."""

from __future__ import annotations

import json

import azure.functions as func
from azure.storage.blob import BlobClient

from api.problems import PROBLEM_JSON
from core.context import app_context
from core.contract import COUNT_METADATA, encode_chunk
from core.run_store import RunRecord, utc_now
from testkit.http_requests import body_of, chunk_blob, get_status

BIG = "x" * 50_000  # 50,000 bytes, 66,668 after base64: over the limit only once encoded


def write_chunked_run(run, probe, run_id: str, items: list[str]) -> str:
    """A run as chunking leaves it: its record, and one chunk blob holding `items`."""
    ctx = run(app_context())
    record = RunRecord(run_id, "default", 5000, created_at=utc_now())
    run(ctx.runs.create(record))
    name = f"{run_id}/000000.jsonl"
    probe.chunks.upload_blob(name, encode_chunk(items), metadata={COUNT_METADATA: str(len(items))})
    run(ctx.runs.save(record.finished(chunks=1, messages=len(items))))
    return name


def redrive(run_id: str) -> func.HttpRequest:
    url = f"http://localhost:7071/api/ingestions/{run_id}/redrive"
    return func.HttpRequest("POST", url, route_params={"run_id": run_id}, body=b"")


def test_oversized_message_is_sent_as_a_claim_check(run, functions, probe, azurite):
    name = write_chunked_run(run, probe, "claim-check", ["small", BIG])
    run(functions["ingest_chunk"](chunk_blob("chunks", name, b"")))

    small, reference = sorted(probe.drain())
    assert small == "small"
    claim_check = json.loads(reference)["claim_check"]
    assert (claim_check["container"], claim_check["bytes"]) == ("large-messages", 50_000)
    blob = BlobClient.from_connection_string(azurite.connection_string, claim_check["container"], claim_check["blob"])
    assert blob.download_blob().readall().decode() == BIG


def test_rejected_oversized_message_fails_the_chunk_and_redrive_completes_it(run, functions, probe, monkeypatch):
    monkeypatch.setenv("LARGE_MESSAGE_MODE", "reject")
    name = write_chunked_run(run, probe, "reject-big", ["small", BIG, "after"])
    run(functions["ingest_chunk"](chunk_blob("chunks", name, b"")))

    status = body_of(run(functions["get_ingestion_status"](get_status("reject-big"))))
    assert status["state"] == "failed"
    assert status["failed_chunks"] == [
        {"index": 0, "error": "line 2: message is 66668 bytes after base64 encoding, over the queue's 65536-byte "
                              "limit (LARGE_MESSAGE_MODE=reject; set claim-check to store it as a blob)"}
    ]  # fmt: skip
    assert probe.queue_length() == 0

    monkeypatch.setenv("LARGE_MESSAGE_MODE", "claim-check")
    answer = run(functions["redrive_ingestion"](redrive("reject-big")))

    assert answer.status_code == 200
    assert body_of(answer)["chunks"] == [{"index": 0, "state": "ingested", "queued": 3, "error": None}]
    assert body_of(run(functions["get_ingestion_status"](get_status("reject-big"))))["state"] == "completed"
    assert probe.queue_length() == 3


def test_redrive_of_an_unknown_run_answers_404(run, functions, app_env):
    answer = run(functions["redrive_ingestion"](redrive("nobody")))

    assert answer.status_code == 404 and answer.mimetype == PROBLEM_JSON
