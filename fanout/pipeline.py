"""The whole pipeline in one process: the same handlers the app runs, called in order."""

from __future__ import annotations

from chunking.chunker import chunk_onward, start_chunking
from chunking.request import IngestionRequest
from core.context import Context
from core.errors import RunNotFoundError
from core.status import RunStatus, run_status
from ingestion.redrive import Progress, ingest_pending_chunks


async def run_pipeline(ctx: Context, request: IngestionRequest, progress: Progress | None = None) -> RunStatus:
    """Chunks the source, then ingests every chunk; returns the run's final status."""
    record, _ = await start_chunking(ctx, request, budget=None)
    if progress:
        progress(f"chunked: {record.messages:,} messages in {record.chunks:,} chunks ({record.state})")
    return await _ingest_and_report(ctx, record.run_id, progress)


async def resume_run(ctx: Context, run_id: str, progress: Progress | None = None) -> RunStatus:
    """Finishes a run whose process died or was interrupted: chunking from where it was saved (if it
    never finished), then every chunk not ingested."""
    versioned = await ctx.runs.get_versioned(run_id)
    if versioned is None:
        raise RunNotFoundError(f"no run {run_id!r}")
    record, etag = versioned
    if record.state == "chunking":
        await chunk_onward(ctx, record, etag, budget=None)
    return await _ingest_and_report(ctx, run_id, progress)


async def _ingest_and_report(ctx: Context, run_id: str, progress: Progress | None) -> RunStatus:
    await ingest_pending_chunks(ctx, run_id, progress)
    status = await run_status(ctx.runs, run_id)
    if status is None:
        raise RunNotFoundError(f"run {run_id!r} disappeared while it ran")
    return status
