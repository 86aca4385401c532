"""Ingesting one chunk: claim it, read and check it, enqueue from its checkpoint, record the outcome."""

from __future__ import annotations

import contextlib

from core.context import Context
from core.contract import COUNT_METADATA, ChunkRef, decode_chunk
from core.errors import ChunkError
from core.run_store import ChunkStatus
from ingestion.claim import claim_chunk, new_owner
from ingestion.large_messages import fit_messages
from ingestion.target import target_sender
from ingestion.window import send_window


async def ingest_chunk(ctx: Context, ref: ChunkRef) -> ChunkStatus:
    """Sends what the chunk's checkpoint says is unsent; a chunk that cannot be read is marked failed.

    A chunk already ingested sends nothing. Errors from storage propagate (the host retries the
    invocation) after the claim is released, and the retry resumes from the last checkpoint.
    """
    settings = ctx.settings
    claim = await claim_chunk(ctx.runs, ref, new_owner(), settings.lease_seconds)
    if isinstance(claim, ChunkStatus):
        return claim
    try:
        download = await ctx.chunks.download_blob(ref.blob_name)
        data = await download.readall()
        expected = download.properties.metadata.get(COUNT_METADATA)
        try:
            messages = await fit_messages(ctx, ref, decode_chunk(data, int(expected) if expected else None))
        except ChunkError as exc:
            return await claim.fail(str(exc))
        await send_window(
            await target_sender(ctx),
            messages,
            settings.ingest_concurrency,
            start=claim.sent,
            checkpoint=claim.checkpoint,
            every=settings.checkpoint_every,
        )
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: otherwise the lease simply expires
            await claim.release()
        raise
    return await claim.complete(len(messages))
