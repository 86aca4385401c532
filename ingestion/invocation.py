"""One chunk invocation as the triggers run it: inside its run's scope (log dimensions), within the
run's `max_concurrency`, with its metrics recorded once at the end.

A chunk that finds every slot of its run taken is not lost and spends none of the host's retries: it
goes back on the redrive queue, hidden for THROTTLE_RETRY_SECONDS, and the `redrive_chunk` trigger tries
again then. If even that send fails the error propagates and the host retries the invocation; a chunk
that still ends up never started is redriven by the sweeper (ingestion/sweeper.py).
"""

from __future__ import annotations

import logging
import time

from core.context import Context
from core.contract import ChunkRef
from core.run_scope import retries_in_scope, run_scope
from core.run_store import ChunkStatus
from core.storage import trigger_queue
from core.telemetry import record_chunk
from ingestion.chunk import ChunkBlob, ingest_chunk
from ingestion.claim import new_owner
from ingestion.slots import hold, take_slot

log = logging.getLogger(__name__)


async def ingest_within_limit(ctx: Context, ref: ChunkRef, blob: ChunkBlob | None = None) -> ChunkStatus | None:
    """The chunk's status after this invocation, or None when it was handed back to wait for a slot."""
    with run_scope(ref.run_id, ref.index):
        started = time.monotonic()
        before = await ctx.runs.chunk_status(ref)
        if before is not None and before.state == "ingested":
            return before
        record = await ctx.runs.get(ref.run_id)
        limit = record.max_concurrency if record is not None else 0
        if not limit:
            status = await ingest_chunk(ctx, ref, blob)
        else:
            slots = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
            slot = await take_slot(slots, ref.run_id, limit, new_owner(), ctx.settings.lease_seconds)
            if slot is None:
                await _hand_back(ctx, ref, limit)
                return None
            async with hold(slot, ctx.settings.lease_seconds):
                status = await ingest_chunk(ctx, ref, blob)
        record_chunk(
            run_id=ref.run_id, state=status.state, enqueued=status.sent - (before.sent if before else 0),
            retries=retries_in_scope(), seconds=time.monotonic() - started,
        )  # fmt: skip
        return status


async def _hand_back(ctx: Context, ref: ChunkRef, limit: int) -> None:
    delay = ctx.settings.throttle_retry_seconds
    queue = await trigger_queue(ctx.clients.queues, ctx.settings.storage, ctx.settings.redrive_queue)
    await queue.send_message(ref.redrive_message(), visibility_timeout=delay)
    log.info("chunk %s waits for one of its run's %d slots (max_concurrency): retried in %d s",
             ref.blob_name, limit, delay)  # fmt: skip
