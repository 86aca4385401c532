"""Ingestion over a whole run: every chunk (a local run, a resume) or the ones that need a redrive."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from core.context import Context
from core.contract import ChunkRef
from core.errors import ClaimLostError, RunNotFoundError
from core.run_scope import run_scope
from core.run_store import ChunkState, ChunkStatus, RunRecord, run_chunks, utc_now
from core.together import run_together
from ingestion.chunk import ingest_chunk

Progress = Callable[[str], None]


async def ingest_pending_chunks(
    ctx: Context, run_id: str, progress: Progress | None = None, *, parallel: int = 1
) -> None:
    """Ingests every chunk of the run, each from its checkpoint, `parallel` at a time (as concurrent blob
    trigger invocations would), started in order; ingested chunks are skipped. The first error stops the
    rest, each chunk resumable from its last checkpoint."""
    record = await ctx.runs.get(run_id)
    if record is None:
        raise RunNotFoundError(f"no run {run_id!r}: it was purged")
    ingested = {status.index for status in await ctx.runs.chunk_statuses(run_id) if status.state == "ingested"}
    refs = await run_chunks(ctx.chunk_container, record)
    waiting = [ref for ref in refs if ref.index not in ingested]
    pending = iter(waiting)
    done = len(refs) - len(waiting)

    async def ingest_next() -> None:
        nonlocal done
        for ref in pending:
            with run_scope(run_id, ref.index):  # log lines carry the chunk, its Put Message retries are counted
                status = await ingest_chunk(ctx, ref)
            done += 1
            if progress:
                progress(f"chunk {done}/{len(refs)} {status.state}: {status.sent:,} messages")

    await run_together(ingest_next() for _ in range(parallel))


@dataclass(frozen=True)
class Reopened:
    """What a redrive resumes: the chunks to ingest again, and the run when its chunking is to carry on."""

    chunks: list[tuple[ChunkRef, ChunkStatus | None]]
    chunking: RunRecord | None


async def reopen_run(ctx: Context, run_id: str) -> Reopened:
    """Readies a run for a redrive: its failed chunks become `stopped` (pending again, so the run is not
    `failed` while they are redriven), a run the source failed is `chunking` again from where it stopped,
    then its stop (cancelled, or failed past its tolerance) and its completion mark are lifted, so that it
    runs, and ends with an event, again. Chunking carries on for a run `chunking` that no live invocation
    holds (stopped, or its chunker died). A run with nothing to redrive is left as it is."""
    versioned = await ctx.runs.get_versioned(run_id)
    if versioned is None:
        raise RunNotFoundError(f"no run {run_id!r}")
    record, etag = versioned
    pending = await chunks_to_redrive(ctx, record)
    chunking = record if record.resumable and not record.leased(time.time()) else None
    if not pending and chunking is None:
        return Reopened([], None)
    if chunking is not None and chunking.state == "failed":
        chunking = chunking.reopened()
        await ctx.runs.save(chunking, if_match=etag)  # ClaimLostError: it moved meanwhile; the caller tries again
    reopened = []
    for ref, status in pending:
        if status is not None and status.state == "failed":
            with contextlib.suppress(ClaimLostError):  # someone took the chunk meanwhile: redriven all the same
                status = await ctx.runs.put_chunk_status(
                    ref, replace(status, state="stopped", updated_at=utc_now()), expected=status
                )
        reopened.append((ref, status))
    await ctx.runs.resume(run_id)
    return Reopened(reopened, chunking)


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


async def chunks_to_redrive(ctx: Context, record: RunRecord) -> list[tuple[ChunkRef, ChunkStatus | None]]:
    """The run's chunks that need a redrive, in order, each with its status as it stands: those its
    record counts but storage lost too (ingesting one marks it failed, saying so)."""
    statuses = {status.index: status for status in await ctx.runs.chunk_statuses(record.run_id)}
    now = time.time()
    refs = await run_chunks(ctx.chunk_container, record)
    due = [(ref, statuses.get(ref.index)) for ref in refs]
    return [(ref, status) for ref, status in due if status is None or status.pending(now)]  # or never started


async def redrive_run(ctx: Context, run_id: str) -> RedriveResult:
    """Re-ingests the chunks that need it here and now, each from its checkpoint; says what each one queued
    (the command line's redrive, after `reopen_run`; over HTTP, `schedule_redrives` hands them to the
    `redrive_chunk` trigger)."""
    record = await ctx.runs.get(run_id)
    if record is None:
        raise RunNotFoundError(f"no run {run_id!r}")
    redriven = []
    for ref, previous in await chunks_to_redrive(ctx, record):
        with run_scope(run_id, ref.index):
            status = await ingest_chunk(ctx, ref)
        queued = status.sent - (previous.sent if previous else 0)
        redriven.append(RedrivenChunk(ref.index, status.state, queued, status.error))
    return RedriveResult(run_id, redriven)
