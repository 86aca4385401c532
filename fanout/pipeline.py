"""The whole pipeline in one process: the same handlers the app runs, called in order.

Chunks are ingested `parallel` at a time (at most the run's `max_concurrency`), as the blob trigger
fans out over a run's chunks in Azure; they share the process's Put Message connections
(INGEST_CONCURRENCY + 4 per account).
"""

from __future__ import annotations

import os

from chunking.chunker import chunk_onward, start_chunking
from chunking.chunking_claim import ChunkingClaim
from chunking.request import IngestionRequest
from core.context import Context
from core.errors import ClaimLostError, RunConflictError, RunNotFoundError
from core.run_events import settle_run
from core.status import RunStatus, run_status
from ingestion.redrive import Progress, ingest_pending_chunks

MAX_PARALLEL = 64


def default_parallel() -> int:
    """Chunks in flight by default: two per CPU (a chunk waits on storage most of the time), at least 2."""
    return max(2, 2 * (os.cpu_count() or 1))


async def run_pipeline(
    ctx: Context, request: IngestionRequest, progress: Progress | None = None, *, parallel: int = 1
) -> RunStatus:
    """Chunks the source, then ingests every chunk; returns the run's final status."""
    record, _ = await start_chunking(ctx, request, budget=None)
    if progress:
        progress(f"chunked: {record.messages:,} messages in {record.chunks:,} chunks ({record.state})")
    return await _ingest_and_report(ctx, record.run_id, progress, parallel)


async def resume_run(ctx: Context, run_id: str, progress: Progress | None = None, *, parallel: int = 1) -> RunStatus:
    """Finishes a run whose process died or was interrupted: chunking from where it was saved (if it
    never finished), then every chunk not ingested."""
    versioned = await ctx.runs.get_versioned(run_id)
    if versioned is None:
        raise RunNotFoundError(f"no run {run_id!r}")
    if versioned[0].state == "chunking":
        try:
            versioned = await ChunkingClaim.wait_for_free(ctx.runs, run_id, ctx.settings.lease_seconds)
            if versioned is not None:
                await chunk_onward(ctx, *versioned, budget=None)
        except ClaimLostError as exc:
            raise RunConflictError(f"{exc}: resume the run once that chunker has stopped", run_id=run_id) from None
    return await _ingest_and_report(ctx, run_id, progress, parallel)


async def _ingest_and_report(ctx: Context, run_id: str, progress: Progress | None, parallel: int) -> RunStatus:
    record = await ctx.runs.get(run_id)
    if record is not None and record.max_concurrency:  # the run's own cap, as its blob triggers keep to it
        parallel = min(parallel, record.max_concurrency)
    await ingest_pending_chunks(ctx, run_id, progress, parallel=parallel)
    await settle_run(ctx, run_id)  # each chunk settles it too, but a resume may find nothing left to ingest
    status = await run_status(ctx.runs, run_id, ctx.settings.queue_targets)
    if status is None:
        raise RunNotFoundError(f"run {run_id!r} disappeared while it ran")
    return status
