"""The redrive queue: a redrive over HTTP puts one message a chunk on it and answers at once; the
`redrive_chunk` trigger ingests each chunk from its checkpoint, however many a run has."""

from __future__ import annotations

import asyncio
import logging

import azure.functions as func

from core.context import Context, app_context
from core.continuations import send_continuation
from core.contract import ChunkRef
from core.errors import ContractError
from core.run_scope import run_scope
from core.run_store import ChunkStatus
from core.storage import trigger_queue
from ingestion.invocation import ingest_within_limit
from ingestion.redrive import Reopened, reopen_run

log = logging.getLogger(__name__)


async def schedule_redrives(ctx: Context, run_id: str) -> Reopened:
    """Queues every chunk of the run that needs a redrive (base64, as the queue trigger expects). A run
    whose chunking was stopped, failed by its source or left by a chunker that died also gets a
    continuation on the control queue: chunking carries on. Returns what it scheduled."""
    reopened = await reopen_run(ctx, run_id)
    refs = [ref for ref, _ in reopened.chunks]
    queue = await trigger_queue(ctx.clients.queues, ctx.settings.storage, ctx.settings.redrive_queue)
    await asyncio.gather(*(queue.send_message(ref.redrive_message()) for ref in refs))
    if reopened.chunking is not None:
        await send_continuation(ctx, reopened.chunking)
    return reopened


async def redrive_chunk(ctx: Context, body: bytes) -> ChunkStatus | None:
    """Ingests the chunk a redrive names: from its checkpoint; an ingested chunk sends nothing, a leased one
    waits for its owner, one whose run's slots are all taken is handed back (None). A message that names no
    chunk does nothing."""
    try:
        ref = ChunkRef.from_redrive_message(body)
    except ContractError as exc:
        log.error("ignoring a redrive-queue message that is not a chunk redrive: %s", exc)
        return None
    with run_scope(ref.run_id, ref.index):
        return await ingest_within_limit(ctx, ref)


async def redrive_chunk_message(msg: func.QueueMessage) -> None:
    await redrive_chunk(await app_context(), msg.get_body())
