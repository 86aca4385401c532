"""A run's status, derived from its run record and its chunks' statuses (nothing else is stored)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.context import Context
from core.run_store import ChunkStatus, RunRecord


def derive_status(record: RunRecord, chunks: Sequence[ChunkStatus]) -> dict[str, Any]:
    ingested = [chunk for chunk in chunks if chunk.state == "ingested"]
    failed = [chunk for chunk in chunks if chunk.state == "failed"]
    total = record.chunks
    if record.state in ("chunking", "failed"):
        state = record.state
    elif len(ingested) == total:
        state = "completed"
    elif failed and len(ingested) + len(failed) == total:
        state = "failed"
    else:
        state = "ingesting"
    return {
        "run_id": record.run_id,
        "state": state,
        "source": record.source,
        "chunk_size": record.chunk_size,
        "chunks": {
            "total": total,
            "ingested": len(ingested),
            "failed": len(failed),
            "ingesting": sum(chunk.state == "ingesting" for chunk in chunks),
        },
        "messages": {"fetched": record.messages, "enqueued": sum(chunk.sent for chunk in chunks)},
        "error": record.error,
        "failed_chunks": [{"index": chunk.index, "error": chunk.error} for chunk in failed],
        "created_at": record.created_at,
        "chunked_at": record.chunked_at,
        "completed_at": max((c.updated_at for c in ingested), default=record.chunked_at)
        if state == "completed"
        else None,
    }


async def run_status(ctx: Context, run_id: str) -> dict[str, Any] | None:
    record = await ctx.runs.get(run_id)
    if record is None:
        return None
    return derive_status(record, await ctx.runs.chunk_statuses(run_id))
