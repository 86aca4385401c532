"""The completion event fits in one queue message, however many chunks failed."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from core.run_events import ERROR_CHARS, run_event
from core.run_store import ChunkStatus, RunRecord
from core.status import derive_status


def failed_run(failed: int) -> RunRecord:
    return RunRecord("r", "default", 10, created_at="2026-11-23T19:00:00.000Z").chunked(failed, failed * 10)


def test_the_event_names_the_run_its_state_counts_times_and_failed_chunks():
    status = derive_status(failed_run(2), [
        ChunkStatus(0, "failed", 0, 10, "2026-11-23T19:00:01.000Z", error="line 1 is not valid JSON"),
        ChunkStatus(1, "ingested", 10, 10, "2026-11-23T19:00:02.000Z"),
    ])  # fmt: skip
    event = run_event(status, "2026-11-23T19:00:03.000Z")
    assert (event["run_id"], event["state"], event["finished_at"]) == ("r", "failed", "2026-11-23T19:00:03.000Z")
    assert event["messages"] == {"fetched": 20, "enqueued": 10, "send_retries": 0, "queue_messages": 10}
    assert event["failed_chunks"] == [{"index": 0, "error": "line 1 is not valid JSON"}]


def test_an_event_of_a_run_with_twenty_thousand_failed_chunks_fits_in_a_queue_message():
    chunks = [ChunkStatus(i, "failed", 0, 10, "2026-11-23T19:00:01.000Z", error="x" * 500) for i in range(20_000)]
    event = run_event(derive_status(failed_run(20_000), chunks), "2026-11-23T19:00:03.000Z")

    encoded = base64.b64encode(json.dumps(event).encode())
    assert len(encoded) <= 64 * 1024
    assert event["failed_chunks_truncated"] is True
    assert event["failed_chunks"][:2] == [{"index": 0}, {"index": 1}]  # the first of them, indexes only
    assert event["chunks"]["failed"] == 20_000


@settings(max_examples=200, deadline=None)
@given(
    error=st.none() | st.text(max_size=70_000),
    chunk_errors=st.lists(st.none() | st.text(max_size=3_000), max_size=60),
    run_id=st.from_regex(r"[a-z0-9]{1,63}", fullmatch=True),
)
def test_whatever_the_texts_the_event_is_made_at_once_and_fits_in_a_queue_message(error, chunk_errors, run_id):
    """A run's error of any length (a source answering a 60,000-character reason phrase) once made this loop
    for ever; every text is now cut, and the failed chunks listed while they fit."""
    record = RunRecord(run_id, "default", 10, created_at="2026-11-23T19:00:00.000Z").failed(error or "", 0, 0)
    record = replace(record, error=error, chunks=len(chunk_errors))
    chunks = [
        ChunkStatus(i, "failed", 0, 10, "2026-11-23T19:00:01.000Z", error=text) for i, text in enumerate(chunk_errors)
    ]
    event = run_event(derive_status(record, chunks), "2026-11-23T19:00:03.000Z")

    assert len(base64.b64encode(json.dumps(event).encode())) <= 64 * 1024
    assert len(event["error"] or "") <= ERROR_CHARS
    listed = [chunk["index"] for chunk in event["failed_chunks"]]
    assert listed == list(range(len(listed)))  # the first ones, in order
    assert event["failed_chunks_truncated"] == (
        len(listed) < len(chunks) or any("error" not in c for c in event["failed_chunks"])
    )
