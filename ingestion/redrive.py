"""Ingestion over a whole run: every chunk (a local run, a resume) or the ones that need a redrive."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from core.context import Context
from core.contract import ChunkRef
from core.run_scope import run_scope
from core.run_store import ChunkState, ChunkStatus, chunks_written
from ingestion.chunk import ingest_chunk

Progress = Callable[[str], None]


async def ingest_pending_chunks(ctx: Context, run_id: str, progress: Progress | None = None) -> None:
    """Ingests every chunk of the run in order, each from its checkpoint; ingested chunks are skipped."""
    ingested = {status.index for status in await ctx.runs.chunk_statuses(run_id) if status.state == "ingested"}
    refs = await chunks_written(ctx.chunk_container, run_id)
    for number, ref in enumerate(refs, start=1):
        if ref.index not in ingested:
            with run_scope(run_id, ref.index):  # log lines carry the chunk, its Put Message retries are counted
                status = await ingest_chunk(ctx, ref)
            if progress:
                progress(f"chunk {number}/{len(refs)} {status.state}: {status.sent:,} messages")


def needs_redrive(status: ChunkStatus | None, now: float) -> bool:
    """Failed, stalled (its owner's lease ran out), or never started."""
    return status is None or status.state == "failed" or (status.state == "ingesting" and not status.leased(now))


@dataclass(frozen=True)
class RedrivenChunk:
    index: int
    state: ChunkState
    queued: int
    error: str | None


@dataclass(frozen=True)
class RedriveResult:
    run_id: str
    chunks: list[RedrivenChunk]

    @property
    def messages_queued(self) -> int:
        return sum(chunk.queued for chunk in self.chunks)

    @property
    def failed(self) -> int:
        return sum(chunk.state == "failed" for chunk in self.chunks)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "messages_queued": self.messages_queued, "failed": self.failed}


async def chunks_to_redrive(ctx: Context, run_id: str) -> list[tuple[ChunkRef, ChunkStatus | None]]:
    """The run's chunks that need a redrive, in order, each with its status as it stands."""
    statuses = {status.index: status for status in await ctx.runs.chunk_statuses(run_id)}
    now = time.time()
    refs = await chunks_written(ctx.chunk_container, run_id)
    return [(ref, statuses.get(ref.index)) for ref in refs if needs_redrive(statuses.get(ref.index), now)]


async def redrive_run(ctx: Context, run_id: str) -> RedriveResult:
    """Re-ingests the chunks that need it here and now, each from its checkpoint; says what each one queued
    (the command line's redrive; over HTTP, `schedule_redrives` hands them to the `redrive_chunk` trigger)."""
    redriven = []
    for ref, previous in await chunks_to_redrive(ctx, run_id):
        with run_scope(run_id, ref.index):
            status = await ingest_chunk(ctx, ref)
        queued = status.sent - (previous.sent if previous else 0)
        redriven.append(RedrivenChunk(ref.index, status.state, queued, status.error))
    return RedriveResult(run_id, redriven)
