"""The whole pipeline in one process: the same handlers the app runs, called in order."""

from __future__ import annotations

from typing import Any

from chunking.request import IngestionRequest
from chunking.run import chunk_run, write_chunks
from core.context import Context
from core.errors import FanoutError
from core.status import run_status
from ingestion.run import Progress, ingest_run


async def run_pipeline(ctx: Context, request: IngestionRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Chunks the source, then ingests every chunk; returns the run's final status."""
    record, _ = await chunk_run(ctx, request, budget=None)
    if progress:
        progress(f"chunked: {record.messages:,} messages in {record.chunks:,} chunks ({record.state})")
    return await _ingest_and_report(ctx, record.run_id, progress)


async def resume_run(ctx: Context, run_id: str, progress: Progress | None = None) -> dict[str, Any]:
    """Finishes a run whose process died: chunking (if it never finished), then every chunk not ingested."""
    record, etag = await ctx.runs.get_versioned(run_id)
    if record is None:
        raise FanoutError(f"no run {run_id!r}")
    if record.state == "chunking":
        await write_chunks(ctx, record, etag, budget=None)
    return await _ingest_and_report(ctx, run_id, progress)


async def _ingest_and_report(ctx: Context, run_id: str, progress: Progress | None) -> dict[str, Any]:
    await ingest_run(ctx, run_id, progress)
    status = await run_status(ctx, run_id)
    if status is None:
        raise FanoutError(f"run {run_id!r} disappeared while it ran")
    return status
