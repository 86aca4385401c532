"""One chunk invocation as the triggers run it: within its run's `max_concurrency`, with its metrics
recorded once at the end. The trigger handlers call it inside the chunk's `run_scope` (log dimensions,
and the counters its metrics read).

A chunk that finds every slot of its run taken is not lost and spends none of the host's retries: it
goes back on the redrive queue, hidden for THROTTLE_RETRY_SECONDS, and the `redrive_chunk` trigger tries
again then; so does one waiting on its run's `max_backlog` (ingestion/backlog.py), for
BACKLOG_RETRY_SECONDS. A chunk that had stalled has its status touched at each hand-back, so the sweeper sees it is
waiting, not stalled, and queues no second copy. If even that send fails the error propagates and the
host retries the invocation; a chunk that still ends up never started is redriven by the sweeper
(runs/sweep.py). A chunk whose run has no record (purged, or being purged) is not ingested.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace

from core.context import Context
from core.contract import ChunkRef
from core.errors import UpdateConflictError
from core.logs import did
from core.run_scope import confirmed_in_scope, retries_in_scope
from core.run_store import FINAL_CHUNK_STATES, ChunkStatus, new_owner, timestamp, utc_now
from core.storage import trigger_queue
from core.telemetry import record_chunk
from ingestion.chunk import ChunkBlob, delivered_generation, ingest_chunk
from ingestion.slots import hold, take_slot

log = logging.getLogger(__name__)


async def ingest_within_limit(ctx: Context, ref: ChunkRef, blob: ChunkBlob | None = None) -> ChunkStatus | None:
    """The chunk's status after this invocation, or None when it was not ingested now: handed back to
    wait for a slot, or its run is gone. Logs the invocation's one line."""
    started = time.monotonic()
    before = await ctx.runs.chunk_status(ref)
    if before is not None and before.state in FINAL_CHUNK_STATES:  # a doubled or late delivery: nothing to do
        did(
            log,
            "chunk %s was %s already: nothing sent",
            ref.blob_name,
            before.state,
            seconds=time.monotonic() - started,
        )
        return before
    if before is not None and _handed_back_by_another(before, ctx.settings.backlog_retry_seconds):
        did(log, "chunk %s waits on its run's max_backlog and another copy's hand-back is due: this one ends",
            ref.blob_name, seconds=time.monotonic() - started)  # fmt: skip
        return None
    record = await ctx.runs.get(ref.run_id)
    if record is None:
        log.warning("chunk %s not ingested: its run has no record (purged, or being purged); nothing sent",
                    ref.blob_name)  # fmt: skip
        return None
    delivered = ref.generation or delivered_generation(blob)
    if delivered and delivered != record.generation:
        log.warning("chunk %s not ingested: it is of an earlier run with this run_id (generation %s, purged "
                    "since; the run now is %s); nothing sent", ref.blob_name, delivered, record.generation)  # fmt: skip
        return None
    ref = replace(ref, generation=record.generation)
    limit = record.max_concurrency
    if not limit:
        status = await ingest_chunk(ctx, ref, blob)
    else:
        slots = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
        slot = await take_slot(slots, ref.run_id, limit, new_owner(), ctx.settings.lease_seconds)
        if slot is None:
            await _hand_back(ctx, ref, ctx.settings.throttle_retry_seconds,
                             f"it waits for one of its run's {limit} slots (max_concurrency)")  # fmt: skip
            await _touch_if_stalled(ctx, ref)
            return None
        async with hold(slot, ctx.settings.lease_seconds):
            status = await ingest_chunk(ctx, ref, blob)
    if status.waits_on_backlog:  # a target queue is over the run's max_backlog: back later, holding nothing meanwhile
        await _hand_back(ctx, ref, ctx.settings.backlog_retry_seconds, "a target queue is over its run's max_backlog")
        return None
    seconds = time.monotonic() - started
    record_chunk(run_id=ref.run_id, state=status.state, enqueued=confirmed_in_scope(), retries=retries_in_scope(),
                 seconds=seconds)  # fmt: skip
    _log_outcome(ref, status, seconds)
    return status


def _handed_back_by_another(status: ChunkStatus, retry_seconds: int) -> bool:
    """The chunk waits on its backlog since less than its hand-back's delay: that hand-back (hidden as long)
    is still to come, so this delivery is another copy (a redrive, a doubled event): it ends, and copies of
    one waiting chunk never multiply."""
    return status.waits_on_backlog and time.time() - timestamp(status.updated_at) < retry_seconds * 0.9


def _log_outcome(ref: ChunkRef, status: ChunkStatus, seconds: float) -> None:
    """What this invocation sent (a duplicate event sends nothing), the chunk's state and its counts in
    all; an ERROR for a chunk that failed."""
    sent_now = confirmed_in_scope()
    if status.state == "failed":
        log.error("chunk %s failed and will not be retried: %s (%d messages sent now, in %.2f s)", ref.blob_name,
                  status.error, sent_now, seconds)  # fmt: skip
    elif status.state == "ingested" and not sent_now:  # by another invocation, while this one waited
        did(log, "chunk %s was ingested already: nothing sent", ref.blob_name, seconds=seconds)
    else:
        did(log, "chunk %s %s: %d messages sent now, %d of %d in all", ref.blob_name, status.state, sent_now,
            status.sent, status.count, seconds=seconds)  # fmt: skip


async def _hand_back(ctx: Context, ref: ChunkRef, delay: int, why: str) -> None:
    """The chunk goes back on the redrive queue, hidden `delay` seconds: not lost, and no host retry spent."""
    queue = await trigger_queue(ctx.clients.queues, ctx.settings.storage, ctx.settings.redrive_queue)
    await queue.send_message(ref.redrive_message(), visibility_timeout=delay)
    log.info("chunk %s handed back: %s; tried again in %d s", ref.blob_name, why, delay)


async def _touch_if_stalled(ctx: Context, ref: ChunkRef) -> None:
    """A stalled chunk's status gets a new `updated_at`: the sweeper then leaves it to the copy that waits for a
    slot; and it no longer says it waits on its backlog, so that copy is not taken for an early one."""
    status = await ctx.runs.chunk_status(ref)
    if status is None or status.state != "ingesting" or status.leased(time.time()):
        return  # never started (the sweeper checks the slots itself), or someone else's
    with contextlib.suppress(UpdateConflictError):  # it moved on meanwhile: nothing to show
        await ctx.runs.put_chunk_status(ref, replace(status, updated_at=utc_now(), waiting=""), expected=status)
