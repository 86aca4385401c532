"""A run's state is derived from its record and its chunks' statuses; so are its counts."""

from __future__ import annotations

import pytest

from core.run_store import ChunkStatus, RunRecord
from core.status import derive_status
from ingestion.redrive import needs_redrive

NOW = 1_000_000.0


def chunk(index: int, state: str, sent: int = 0, lease_until: float = 0.0) -> ChunkStatus:
    return ChunkStatus(index, state, sent=sent, count=10, updated_at=f"t{index}", lease_until=lease_until)


def chunked(chunks: int = 3) -> RunRecord:
    return RunRecord("r", "default", 10, created_at="t").finished(chunks, chunks * 10)


@pytest.mark.parametrize(
    ("record", "chunks", "state"),
    [
        (RunRecord("r", "default", 10), [], "chunking"),
        (RunRecord("r", "default", 10).failed("source down", 1, 10), [chunk(0, "ingested", 10)], "failed"),
        (chunked(), [chunk(0, "ingested", 10), chunk(1, "ingested", 10)], "ingesting"),
        (chunked(), [chunk(i, "ingested", 10) for i in range(3)], "completed"),
        (chunked(), [chunk(0, "ingested", 10), chunk(1, "failed", 3), chunk(2, "ingesting", 5)], "ingesting"),
        (chunked(), [chunk(0, "ingested", 10), chunk(1, "failed", 3), chunk(2, "ingested", 10)], "failed"),
        (chunked(0), [], "completed"),
    ],
)
def test_state_follows_from_the_record_and_the_chunks(record, chunks, state):
    assert derive_status(record, chunks).state == state


def test_counts_and_failed_chunks_are_summed_from_the_chunks():
    failed = ChunkStatus(1, "failed", sent=3, count=10, updated_at="t1", error="line 4 is not JSON")
    status = derive_status(chunked(), [chunk(0, "ingested", 10), failed, chunk(2, "ingesting", 5)])
    assert status.to_json()["chunks"] == {"total": 3, "ingested": 1, "failed": 1, "ingesting": 1}
    assert status.to_json()["messages"] == {"fetched": 30, "enqueued": 18, "send_retries": 0}
    assert status.to_json()["failed_chunks"] == [{"index": 1, "error": "line 4 is not JSON"}]
    assert status.completed_at is None


def test_completed_at_is_the_last_chunk_to_finish():
    status = derive_status(chunked(2), [chunk(0, "ingested", 10), chunk(1, "ingested", 10)])
    assert status.completed_at == "t1"


@pytest.mark.parametrize(
    ("status", "redrive"),
    [
        (None, True),  # never started (a dropped event)
        (chunk(0, "failed"), True),
        (chunk(0, "ingesting", lease_until=NOW - 1), True),  # its owner died: the lease ran out
        (chunk(0, "ingesting", lease_until=NOW + 30), False),  # someone is sending it now
        (chunk(0, "ingested", 10), False),
    ],
)
def test_a_chunk_needs_a_redrive_when_failed_stalled_or_never_started(status, redrive):
    assert needs_redrive(status, NOW) is redrive
