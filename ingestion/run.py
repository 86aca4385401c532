"""Ingestion over a whole run: every chunk (a local run, a resume) or the ones that need a redrive."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from core.context import Context
from core.contract import ChunkRef, run_prefix
from core.run_store import ChunkStatus
from ingestion.chunk import ingest_chunk

Progress = Callable[[str], None]


async def chunk_refs(ctx: Context, run_id: str) -> list[ChunkRef]:
    names = [blob.name async for blob in ctx.chunks.list_blobs(name_starts_with=run_prefix(run_id))]
    return sorted(ChunkRef.parse(name, ctx.settings.chunk_container) for name in names)


async def ingest_run(ctx: Context, run_id: str, progress: Progress | None = None) -> None:
    """Ingests every chunk of the run in order, each from its checkpoint; ingested chunks are skipped."""
    ingested = {status.index for status in await ctx.runs.chunk_statuses(run_id) if status.state == "ingested"}
    refs = await chunk_refs(ctx, run_id)
    for number, ref in enumerate(refs, start=1):
        if ref.index not in ingested:
            status = await ingest_chunk(ctx, ref)
            if progress:
                progress(f"chunk {number}/{len(refs)} {status.state}: {status.sent:,} messages")


def needs_redrive(status: ChunkStatus | None, now: float) -> bool:
    """Failed, stalled (its owner's lease ran out), or never started."""
    return status is None or status.state == "failed" or (status.state == "ingesting" and not status.leased(now))


async def redrive_run(ctx: Context, run_id: str) -> dict[str, Any]:
    """Re-ingests the chunks that need it, each from its checkpoint; says what each one queued."""
    before = {status.index: status for status in await ctx.runs.chunk_statuses(run_id)}
    now = time.time()
    redriven = []
    for ref in await chunk_refs(ctx, run_id):
        previous = before.get(ref.index)
        if needs_redrive(previous, now):
            status = await ingest_chunk(ctx, ref)
            queued = status.sent - (previous.sent if previous else 0)
            redriven.append({"index": ref.index, "state": status.state, "queued": queued, "error": status.error})
    return {
        "run_id": run_id,
        "chunks": redriven,
        "messages_queued": sum(chunk["queued"] for chunk in redriven),
        "failed": sum(chunk["state"] == "failed" for chunk in redriven),
    }
