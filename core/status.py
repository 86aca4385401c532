"""A run's status, derived from its run record and its chunks' statuses (nothing else is stored)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from core.run_store import ChunkStatus, RunRecord, RunStore

RunState = Literal["chunking", "ingesting", "completed", "failed"]


@dataclass(frozen=True)
class ChunkCounts:
    total: int | None
    ingested: int
    failed: int
    ingesting: int


@dataclass(frozen=True)
class MessageCounts:
    fetched: int | None
    enqueued: int
    send_retries: int = 0  # Put Message calls retried (503 server busy, timeouts, broken connections)


@dataclass(frozen=True)
class FailedChunk:
    index: int
    error: str | None


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
    sweeps: dict[str, Any] = field(default_factory=dict)  # what the sweeper redrove (ingestion/sweeper.py)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def derive_status(record: RunRecord, chunks: Sequence[ChunkStatus]) -> RunStatus:
    ingested = [chunk for chunk in chunks if chunk.state == "ingested"]
    failed = [chunk for chunk in chunks if chunk.state == "failed"]
    total = record.chunks
    state: RunState
    if record.state in ("chunking", "failed"):
        state = "chunking" if record.state == "chunking" else "failed"
    elif len(ingested) == total:
        state = "completed"
    elif failed and len(ingested) + len(failed) == total:
        state = "failed"
    else:
        state = "ingesting"
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
        ),
        messages=MessageCounts(
            fetched=record.messages,
            enqueued=sum(chunk.sent for chunk in chunks),
            send_retries=sum(chunk.retries for chunk in chunks),
        ),
        error=record.error,
        failed_chunks=[FailedChunk(chunk.index, chunk.error) for chunk in failed],
        created_at=record.created_at,
        chunked_at=record.chunked_at,
        completed_at=max((c.updated_at for c in ingested), default=record.chunked_at) if state == "completed" else None,
    )


async def run_status(runs: RunStore, run_id: str) -> RunStatus | None:
    record = await runs.get(run_id)
    if record is None:
        return None
    status = derive_status(record, await runs.chunk_statuses(run_id))
    sweeps, _ = await runs.sweep_log(run_id)
    return replace(status, sweeps=sweeps) if sweeps else status
