"""Ingesting one chunk: read it, check it, enqueue its messages, record the outcome."""

from __future__ import annotations

import functools

from fanout.chunk_contract import COUNT_METADATA, ChunkRef, decode_chunk
from fanout.context import Context
from fanout.errors import ChunkError
from fanout.runs import ChunkStatus, utc_now
from ingestion.target import target_queue
from ingestion.window import send_window


async def ingest_chunk(ctx: Context, ref: ChunkRef) -> ChunkStatus:
    """Sends the chunk's messages unless it was ingested before; a bad chunk is marked failed."""
    status = await ctx.runs.chunk_status(ref)
    if status is not None and status.state == "ingested":
        return status
    download = await ctx.chunks.download_blob(ref.blob_name)
    data = await download.readall()
    expected = download.properties.metadata.get(COUNT_METADATA)
    try:
        messages = decode_chunk(data, int(expected) if expected else None)
    except ChunkError as exc:
        status = ChunkStatus(ref.index, "failed", sent=0, count=0, updated_at=utc_now(), error=str(exc))
    else:
        queue = await target_queue(ctx)
        send = functools.partial(queue.send_message, time_to_live=ctx.settings.message_ttl)
        await send_window(send, messages, ctx.settings.ingest_concurrency)
        count = len(messages)
        status = ChunkStatus(ref.index, "ingested", sent=count, count=count, updated_at=utc_now())
    await ctx.runs.save_chunk_status(ref, status)
    return status
