"""A run's state is derived from its record, its chunks' statuses and its stop; so are its counts, its
pace and whether it has settled (final, nothing still sending: time for its one completion event)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.run_store import ChunkStatus, RunRecord, RunStop, unix_ms
from core.status import derive_status

CREATED = "2026-11-23T19:00:00.000Z"
NOW = unix_ms(CREATED) / 1000 + 100  # 100 s after the run was created


def at(second: int) -> str:
    return f"2026-11-23T19:00:{second:02d}.000Z"


def chunk(index: int, state: str, sent: int = 0, lease_until: float = 0.0) -> ChunkStatus:
    return ChunkStatus(index, state, sent=sent, count=10, updated_at=at(10 + index), lease_until=lease_until)


def chunked(chunks: int = 3, tolerated: int = 0) -> RunRecord:
    record = RunRecord("r", "default", 10, created_at=CREATED, max_failed_chunks=tolerated)
    return record.chunked(chunks, chunks * 10)


SENDING = NOW + 30  # a live lease
CANCELLED = RunStop("cancelled", at(50))


@pytest.mark.parametrize(
    ("record", "chunks", "stop", "state", "settled"),
    [
        (RunRecord("r", "default", 10), [], None, "chunking", False),
        (RunRecord("r", "default", 10).failed("source down", 1, 10), [chunk(0, "ingested", 10)], None, "failed", True),
        (chunked(), [chunk(0, "ingested", 10), chunk(1, "ingested", 10)], None, "ingesting", False),
        (chunked(), [chunk(i, "ingested", 10) for i in range(3)], None, "completed", True),
        (chunked(0), [], None, "completed", True),
        # one failed chunk past a tolerance of 0: failed at once, settled once chunk 2 stops sending
        (
            chunked(),
            [chunk(0, "ingested", 10), chunk(1, "failed", 3), chunk(2, "ingesting", 5, SENDING)],
            None,
            "failed",
            False,
        ),
        (chunked(), [chunk(0, "ingested", 10), chunk(1, "failed", 3), chunk(2, "stopped", 5)], None, "failed", True),
        # within the tolerance the run goes on, and completes with the failed chunk listed
        (
            chunked(3, 1),
            [chunk(0, "ingested", 10), chunk(1, "failed", 3), chunk(2, "ingesting", 5, SENDING)],
            None,
            "ingesting",
            False,
        ),
        (
            chunked(3, 1),
            [chunk(0, "ingested", 10), chunk(1, "failed", 3), chunk(2, "ingested", 10)],
            None,
            "completed",
            True,
        ),
        (chunked(3, 1), [chunk(0, "failed"), chunk(1, "failed", 3), chunk(2, "ingested", 10)], None, "failed", True),
        # cancelled at once; settled when nothing sends any more (a chunk whose owner died does not count)
        (chunked(), [chunk(0, "ingested", 10), chunk(1, "ingesting", 5, SENDING)], CANCELLED, "cancelled", False),
        (
            chunked(),
            [chunk(0, "ingested", 10), chunk(1, "stopped", 5), chunk(2, "ingesting", 1, NOW - 1)],
            CANCELLED,
            "cancelled",
            True,
        ),
        (RunRecord("r", "default", 10), [], CANCELLED, "cancelled", True),
    ],
)
def test_state_and_settling_follow_from_the_record_the_chunks_and_the_stop(record, chunks, stop, state, settled):
    status = derive_status(record, chunks, stop, now=NOW)
    assert (status.state, status.settled) == (state, settled)


def test_counts_and_failed_chunks_are_summed_from_the_chunks():
    failed = replace(chunk(1, "failed", 3), error="line 4 is not JSON")
    status = derive_status(
        chunked(4, 1), [chunk(0, "ingested", 10), failed, chunk(2, "ingesting", 5), chunk(3, "stopped", 2)]
    )
    chunks = {"total": 4, "ingested": 1, "failed": 1, "ingesting": 1, "stopped": 1, "waiting": 0}
    assert status.to_json()["chunks"] == chunks
    assert status.to_json()["messages"] == {"fetched": 40, "enqueued": 20, "send_retries": 0, "queue_messages": 20}
    assert status.to_json()["failed_chunks"] == [{"index": 1, "error": "line 4 is not JSON"}]
    assert status.completed_at is None
    assert "settled" not in status.to_json()


def test_completed_at_is_the_last_chunk_to_finish():
    status = derive_status(chunked(2), [chunk(0, "ingested", 10), chunk(1, "ingested", 10)])
    assert status.completed_at == at(11)


def test_pace_is_messages_since_creation_and_the_eta_covers_what_is_left():
    record = replace(chunked(10), messages=10_000)
    status = derive_status(record, [ChunkStatus(0, "ingesting", 2_000, 5_000, at(40), lease_until=SENDING)], now=NOW)
    assert status.messages_per_second == 20.0  # 2,000 in 100 s
    assert status.eta_seconds == 400.0  # 8,000 left at 20/s
    done = derive_status(chunked(1), [replace(chunk(0, "ingested", 10), updated_at=at(5))], now=NOW)
    assert (done.messages_per_second, done.eta_seconds) == (2.0, None)  # measured to the end, not to now


@pytest.mark.parametrize(
    ("status", "redrive"),
    [
        (None, True),  # never started (a dropped event)
        (chunk(0, "failed"), True),
        (chunk(0, "stopped", 5), True),  # its run was cancelled
        (chunk(0, "ingesting", lease_until=NOW - 1), True),  # its owner died: the lease ran out
        (chunk(0, "ingesting", lease_until=NOW + 30), False),  # someone is sending it now
        (chunk(0, "ingested", 10), False),
    ],
)
def test_a_chunk_needs_a_redrive_when_failed_stopped_stalled_or_never_started(status, redrive):
    assert (status is None or status.pending(NOW)) is redrive


@given(
    final=st.integers(1, 45),
    written=st.integers(0, 45),
    failed=st.integers(0, 45),
    most=st.integers(0, 10),
    percent=st.integers(0, 100),
)
def test_a_run_still_chunking_fails_only_as_its_end_would(final, written, failed, most, percent):
    """Invariant: no verdict while chunking that the run's end would reverse. A run failed while its source is
    still read is failed with the same failed chunks whatever count it ends with (here: `final` chunks)."""
    written, failed = min(written, final), min(failed, written, final)
    record = replace(RunRecord("r", "default", 10, created_at=CREATED, max_failed_chunks=most,
                               max_failed_percent=percent), chunks=written)  # fmt: skip
    statuses = [chunk(index, "failed" if index < failed else "ingested", 10) for index in range(written)]
    while_chunking = derive_status(record, statuses, now=NOW)
    at_the_end = derive_status(record.chunked(final, final * 10), statuses, now=NOW)
    if while_chunking.state == "failed":
        assert at_the_end.state == "failed"
        assert while_chunking.tolerance_exceeded
    assert while_chunking.state in ("chunking", "failed")
