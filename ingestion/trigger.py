"""The blob trigger's handler: a chunk blob was created, ingest it."""

from __future__ import annotations

import logging

import azure.functions as func

from core.context import app_context
from core.contract import ChunkRef
from core.errors import ChunkError
from core.run_scope import run_scope
from ingestion.chunk import ChunkBlob
from ingestion.invocation import ingest_within_limit

log = logging.getLogger(__name__)


async def ingest_chunk_blob(chunk: func.InputStream) -> None:
    ctx = await app_context()
    try:
        ref = ChunkRef.parse(chunk.name or "", ctx.settings.chunk_container)
    except ChunkError as exc:
        log.warning("ignoring blob that is not a chunk: %s", exc)
        return
    with run_scope(ref.run_id, ref.index):
        status = await ingest_within_limit(ctx, ref, ChunkBlob(chunk.read(), getattr(chunk, "metadata", None)))
        if status is None:
            return  # handed back to wait for a slot of its run (max_concurrency)
        if status.state == "failed":
            log.error("chunk %s failed and will not be retried: %s", ref.blob_name, status.error)
        else:
            log.info("chunk %s: %d messages enqueued", ref.blob_name, status.sent)
