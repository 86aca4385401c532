"""The whole pipeline in one process: the same handlers the app runs, called in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chunking.request import IngestionRequest
from chunking.run import chunk_run
from fanout.chunk_contract import ChunkRef, run_prefix
from fanout.context import Context
from fanout.status import run_status
from ingestion.chunk import ingest_chunk

Progress = Callable[[str], None]


async def ingest_run(ctx: Context, run_id: str, progress: Progress | None = None) -> None:
    """Ingests every chunk of the run in name order; chunks already ingested send nothing."""
    names = [blob.name async for blob in ctx.chunks.list_blobs(name_starts_with=run_prefix(run_id))]
    sent = 0
    for number, name in enumerate(sorted(names), start=1):
        status = await ingest_chunk(ctx, ChunkRef.parse(name, ctx.settings.chunk_container))
        sent += status.sent
        if progress:
            progress(f"chunk {number}/{len(names)} {status.state}, {sent:,} messages enqueued")


async def run_pipeline(ctx: Context, request: IngestionRequest, progress: Progress | None = None) -> dict[str, Any]:
    """Chunks the source, then ingests every chunk; returns the run's final status."""
    record, _ = await chunk_run(ctx, request)
    if progress:
        progress(f"chunked: {record.messages:,} messages in {record.chunks:,} chunks ({record.state})")
    await ingest_run(ctx, record.run_id, progress)
    status = await run_status(ctx, record.run_id)
    assert status is not None  # chunk_run wrote the record
    return status
