"""A run's status, derived from its run record, its chunks' statuses, its stop and its completion mark
(nothing else is stored).

A run is `failed` at once when more of its chunks failed than it tolerates (`max_failed_chunks`);
with no more than that it ends `completed`, the failed chunks listed. It is `cancelled` from the
moment it is cancelled. It has *settled* when it is final and nothing is still sending: what its
one completion event reports (core/run_events.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, get_args

from core.redact import public_reason
from core.run_store import ChunkStatus, RunRecord, RunStop, RunStore, unix_ms

RunState = Literal["chunking", "ingesting", "completed", "failed", "cancelled"]
STATES: tuple[RunState, ...] = get_args(RunState)
FINAL_STATES: tuple[RunState, ...] = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class ChunkCounts:
    total: int | None
    ingested: int
    failed: int
    ingesting: int
    stopped: int = 0  # stopped at a checkpoint (the run was cancelled or failed): a redrive resumes them
    waiting: int = 0  # of `ingesting`, paused at a checkpoint while a target queue is over the run's max_backlog


@dataclass(frozen=True)
class MessageCounts:
    """IDs (items) fetched and enqueued; the queue messages holding them (more IDs than messages in batches)."""

    fetched: int | None
    enqueued: int
    send_retries: int = 0  # Put Message calls retried (503 server busy, timeouts, broken connections)
    queue_messages: int = 0


@dataclass(frozen=True)
class FailedChunk:
    index: int
    error: str | None


@dataclass(frozen=True)
class WebhookDelivery:
    """The completion event's delivery to RUN_EVENTS_WEBHOOK (core/webhook.py)."""

    state: Literal["delivered", "undelivered", "pending"]
    deliveries: int
    reason: str

    @classmethod
    def from_metadata(cls, metadata: object) -> WebhookDelivery | None:
        """As the completion mark records it; None when it records none."""
        if not isinstance(metadata, dict) or metadata.get("webhook") not in ("delivered", "undelivered", "pending"):
            return None
        deliveries = str(metadata.get("webhook_deliveries", "0"))
        return cls(metadata["webhook"], int(deliveries) if deliveries.isdigit() else 0,
                   public_reason(str(metadata.get("webhook_reason", ""))))  # fmt: skip

    def to_metadata(self) -> dict[str, str]:
        return {"webhook": self.state, "webhook_deliveries": str(self.deliveries), "webhook_reason": self.reason}


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    state: RunState
    source: str
    chunk_size: int
    chunks: ChunkCounts
    messages: MessageCounts
    error: str | None
    failed_chunks: list[FailedChunk] = field(default_factory=list)
    created_at: str = ""
    chunked_at: str | None = None
    completed_at: str | None = None
    sweeps: dict[str, Any] = field(default_factory=dict)  # what the sweeper redrove (runs/sweep.py)
    max_failed_chunks: int = 0
    messages_per_second: float | None = None  # enqueued since the run was created
    eta_seconds: float | None = None  # while ingesting: the messages left at that pace
    cancelled_at: str | None = None
    finished_at: str | None = None  # when its completion event was sent
    messages_by_queue: dict[str, int] = field(default_factory=dict)  # queue messages, by target (`account/queue`)
    max_failed_percent: int = 0
    delivery: dict[str, Any] = field(default_factory=dict)  # the shape of its messages (core/delivery.py)
    max_backlog: int = 0
    backlog: dict[str, Any] | None = None  # while chunks wait on max_backlog: how many, the queues, a warning
    event_webhook: WebhookDelivery | None = None  # its completion event's delivery to RUN_EVENTS_WEBHOOK
    settled: bool = field(default=False, compare=False)  # final, and no chunk is still sending

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        del body["settled"]
        if not body["messages_by_queue"]:  # counted only when asked for (run_status's `targets`)
            del body["messages_by_queue"]
        if body["backlog"] is None:  # only while chunks wait on the run's max_backlog
            del body["backlog"]
        return body

    def summary(self) -> dict[str, Any]:
        """The run as a list shows it: its status without the failed chunks' errors."""
        return {key: value for key, value in self.to_json().items() if key != "failed_chunks"}

    @property
    def tolerance_exceeded(self) -> bool:
        total = None if self.state == "chunking" else self.chunks.total  # known once chunking has ended
        return past_tolerance(self.chunks.failed, total, self.max_failed_chunks, self.max_failed_percent)


def past_tolerance(failed: int, total: int | None, most: int, percent: int) -> bool:
    """More chunks failed than a run tolerates: over `most` (unless only `percent` is set), or over `percent`
    of `total` (None while chunking goes on: the chunks written so far are not the run's, so no percentage is
    judged until the source's end). Both 0: none tolerated."""
    over_count = failed > most if most or not percent else False
    over_percent = bool(percent) and total is not None and failed * 100 > percent * total
    return over_count or over_percent


def count_by_queue(chunks: Sequence[ChunkStatus], targets: Sequence[str]) -> dict[str, int]:
    """Messages sent to each target, from the chunks' checkpoints. A chunk checkpointed under another
    set of targets (QUEUE_ACCOUNTS or QUEUE_PARTITIONS changed since) counts under "unknown"."""
    if len(targets) <= 1:
        return {target: sum(chunk.messages_sent for chunk in chunks) for target in targets}
    counts = [0] * len(targets)
    unknown = 0
    for chunk in chunks:
        if len(chunk.by_queue) == len(targets):
            counts = [total + sent for total, sent in zip(counts, chunk.by_queue, strict=True)]
        else:
            unknown += chunk.messages_sent
    return dict(zip(targets, counts, strict=True)) | ({"unknown": unknown} if unknown else {})


def derive_status(
    record: RunRecord,
    chunks: Sequence[ChunkStatus],
    stop: RunStop | None = None,
    finished_at: str | None = None,
    now: float | None = None,
    targets: Sequence[str] = (),
) -> RunStatus:
    now = time.time() if now is None else now
    ingested = [chunk for chunk in chunks if chunk.state == "ingested"]
    failed = [chunk for chunk in chunks if chunk.state == "failed"]
    stopped = sum(chunk.state == "stopped" for chunk in chunks)
    sending = any(chunk.leased(now) for chunk in chunks)
    # Chunks past the record's count: written by a chunker that stopped before it could count them (killed,
    # or its run failed first). Their blobs are there and are ingested: the run is done once they are too.
    total = None if record.chunks is None else record.chunks + sum(chunk.index >= record.chunks for chunk in chunks)
    done = record.state != "chunking" and len(ingested) + len(failed) == total
    state: RunState
    if stop is not None and stop.reason == "cancelled":
        state, settled = "cancelled", not sending
    elif record.state == "failed":  # the source failed: what was chunked is ingested all the same
        state, settled = "failed", len(ingested) + len(failed) + stopped == total
    elif past_tolerance(len(failed), None if record.state == "chunking" else total, record.max_failed_chunks,
                        record.max_failed_percent):  # fmt: skip
        state, settled = "failed", not sending
    elif record.state == "chunking":
        state, settled = "chunking", False
    elif done:
        state, settled = "completed", True
    else:
        state, settled = "ingesting", False
    enqueued = sum(chunk.sent for chunk in chunks)
    last_update = max((chunk.updated_at for chunk in chunks), default=record.chunked_at)
    completed_at = max((c.updated_at for c in ingested), default=record.chunked_at) if state == "completed" else None
    rate = _rate(enqueued, record.created_at, last_update if state in FINAL_STATES else None, now)
    left = max(0, (record.messages or 0) - enqueued)
    return RunStatus(
        run_id=record.run_id,
        state=state,
        source=record.source,
        chunk_size=record.chunk_size,
        chunks=ChunkCounts(
            total=total,
            ingested=len(ingested),
            failed=len(failed),
            ingesting=sum(chunk.state == "ingesting" for chunk in chunks),
            stopped=stopped,
            waiting=sum(chunk.waits_on_backlog for chunk in chunks),
        ),
        messages=MessageCounts(
            fetched=record.messages,
            enqueued=enqueued,
            send_retries=sum(chunk.retries for chunk in chunks),
            queue_messages=sum(chunk.messages_sent for chunk in chunks),
        ),
        messages_by_queue=count_by_queue(chunks, targets),
        error=_shown(record.error),
        failed_chunks=[FailedChunk(chunk.index, _shown(chunk.error)) for chunk in failed],
        created_at=record.created_at,
        chunked_at=record.chunked_at,
        completed_at=completed_at,
        max_failed_chunks=record.max_failed_chunks,
        max_failed_percent=record.max_failed_percent,
        delivery=asdict(record.delivery),
        max_backlog=record.max_backlog,
        messages_per_second=rate,
        eta_seconds=round(left / rate, 1) if state == "ingesting" and rate else None,
        cancelled_at=stop.at if stop is not None and stop.reason == "cancelled" else None,
        finished_at=finished_at,
        settled=settled,
    )


def _shown(reason: str | None) -> str | None:
    """A reason as a status shows it (one kept before a secret was configured, or cut, is made safe here)."""
    return None if reason is None else public_reason(reason)


def _rate(enqueued: int, created_at: str, ended_at: str | None, now: float) -> float | None:
    """Messages per second from the run's creation to its end (a final run) or to now."""
    if not created_at or not enqueued:
        return None
    seconds = (unix_ms(ended_at) / 1000 if ended_at else now) - unix_ms(created_at) / 1000
    return round(enqueued / seconds, 1) if seconds > 0 else None


async def run_status(
    runs: RunStore, run_id: str, targets: Sequence[str] = (), *, with_errors: bool = True
) -> RunStatus | None:
    """The run's status, read now; None for an unknown run. `with_errors`: the failed chunks' errors too;
    `targets` (Settings.queue_targets): its messages counted by target queue too."""
    record, chunks, stop, finished, (sweeps, _) = await asyncio.gather(
        runs.get(run_id), runs.chunk_statuses(run_id, with_errors=with_errors), runs.stop_of(run_id),
        runs.event_record(run_id), runs.sweep_log(run_id),
    )  # fmt: skip
    if record is None:
        return None
    finished_at = finished.get("finished_at") if finished else None
    finished_at = finished_at if isinstance(finished_at, str) else None
    status = derive_status(record, chunks, stop, finished_at, targets=targets)
    webhook = WebhookDelivery.from_metadata(finished.get("webhook") if finished else None)
    return replace(status, sweeps=sweeps or status.sweeps, event_webhook=webhook)
