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
        await ingest_within_limit(ctx, ref, ChunkBlob(chunk.read(), getattr(chunk, "metadata", None)))
