"""Redrive a run: its failed, stopped, stalled and never-started chunks are ingested again, each from its
checkpoint, and its chunking carries on if it stopped before its source's end (docs/operations.md#redrive).

`redrive_run` is the one operation, for the HTTP API and the command line alike: `reopen_run` readies the
run, then the work is queued for the `redrive_chunk` trigger (the app) or done in this process (`here`, the
command line). Either way the same chunks are reopened: the ones `chunks_to_redrive` names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import azure.functions as func

from chunking.chunker import chunk_onward
from core.context import Context, app_context
from core.continuations import send_continuation
from core.contract import ChunkRef
from core.errors import ContractError, RunConflictError, UpdateConflictError
from core.logs import did
from core.run_scope import run_scope
from core.run_store import ChunkState, ChunkStatus, RunRecord, run_chunks, utc_now
from core.storage import trigger_queue
from ingestion.invocation import ingest_within_limit
from runs.local import ingest_here
from runs.status import checked_run_id, no_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reopened:
    """What a redrive resumes: the chunks to ingest again, and the run when its chunking is to carry on."""

    chunks: list[tuple[ChunkRef, ChunkStatus | None]]
    chunking: RunRecord | None


async def reopen_run(ctx: Context, run_id: str) -> Reopened:
    """Readies a run for a redrive: its failed chunks become `stopped` (pending again, so the run is not
    `failed` while they are redriven), a run the source failed is `chunking` again from where it stopped,
    then its stop (cancelled, or failed past its tolerance) and its completion mark are lifted, so that it
    runs, and ends with an event, again. Chunking carries on for a run `chunking` that no live invocation
    holds (stopped, or its chunker died). A run with nothing to redrive is left as it is."""
    versioned = await ctx.runs.get_versioned(checked_run_id(run_id))
    if versioned is None:
        raise no_run(run_id)
    record, etag = versioned
    pending = await chunks_to_redrive(ctx, record)
    chunking = record if record.resumable and not record.leased(time.time()) else None
    if not pending and chunking is None:
        return Reopened([], None)
    if chunking is not None and chunking.state == "failed":
        chunking = chunking.reopened()
    # Written even when only chunks reopen, and first: a purge that judged the run before this marks it no more,
    # and one that marked it first makes this fail (UpdateConflictError: it moved meanwhile; the caller tries again)
    etag = await ctx.runs.save(chunking if chunking is not None else record, if_match=etag)
    reopened = []
    for ref, status in pending:
        if status is not None and status.state == "failed":
            with contextlib.suppress(UpdateConflictError):  # someone took the chunk meanwhile: redriven all the same
                status = await ctx.runs.put_chunk_status(
                    ref, replace(status, state="stopped", updated_at=utc_now()), expected=status
                )
        reopened.append((ref, status))
    still = await ctx.runs.get_versioned(run_id)
    if still is None or still[1] != etag:  # purged as it reopened (a new run under the id, maybe): its stop stays
        raise RunConflictError(
            f"run {run_id!r} was purged or changed as it was redriven; look at it and redrive it again",
            run_id=run_id, state=still[0].state if still else "purging",
        )  # fmt: skip
    await ctx.runs.lift_stop(run_id)
    return Reopened(reopened, chunking)


@dataclass(frozen=True)
class RedrivenChunk:
    """What redriving one chunk in this process did."""

    index: int
    state: ChunkState
    queued: int
    error: str | None


@dataclass(frozen=True)
class RedriveResult:
    """What a redrive reopened: the chunks (by index) and whether chunking carries on; `chunks`, for a
    redrive done here, what each one did."""

    run_id: str
    scheduled: list[int]
    chunking_resumed: bool
    chunks: list[RedrivenChunk] = field(default_factory=list)

    @property
    def messages_queued(self) -> int:
        return sum(chunk.queued for chunk in self.chunks)

    @property
    def failed(self) -> int:
        return sum(chunk.state == "failed" for chunk in self.chunks)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "messages_queued": self.messages_queued, "failed": self.failed}


async def redrive_run(ctx: Context, run_id: str, *, here: bool = False) -> RedriveResult:
    """Reopens the run (`reopen_run`) and redrives what it reopened: queued for the `redrive_chunk` trigger
    and a continuation (the app: answers at once, however many chunks), or, `here`, in this process, its
    chunking carried on to the source's end and then each chunk ingested from its checkpoint (the command
    line)."""
    started = time.monotonic()
    with run_scope(run_id):
        reopened = await reopen_run(ctx, run_id)
        scheduled, resumed = [ref.index for ref, _ in reopened.chunks], reopened.chunking is not None
        if here:
            result = RedriveResult(run_id, scheduled, resumed, await _redrive_here(ctx, run_id, reopened))
        else:
            await _schedule(ctx, reopened)
            result = RedriveResult(run_id, scheduled, resumed)
        did(log, "run %s redriven%s: %d chunks, chunking %s", run_id, " here" if here else "", len(scheduled),
            "resumed" if result.chunking_resumed else "not resumed", seconds=time.monotonic() - started)  # fmt: skip
    return result


async def chunks_to_redrive(
    ctx: Context, record: RunRecord, *, here: bool = False
) -> list[tuple[ChunkRef, ChunkStatus | None]]:
    """The run's chunks that need a redrive, in order, each with its status as it stands: those its
    record counts but storage lost too (ingesting one marks it failed, saying so). A chunk waiting on its
    run's backlog has its hand-back queued already; `here` (this process ingests them) takes it too."""
    statuses = {status.index: status for status in await ctx.runs.chunk_statuses(record.run_id)}
    now = time.time()
    refs = await run_chunks(ctx.chunk_container, record)
    due = [(ref, statuses.get(ref.index)) for ref in refs]
    return [(ref, status) for ref, status in due
            if status is None or status.pending(now) or (here and status.waits_on_backlog)]  # fmt: skip


async def _schedule(ctx: Context, reopened: Reopened) -> None:
    """Queues each reopened chunk (base64, as the queue trigger expects), and a continuation for a run whose
    chunking carries on."""
    queue = await trigger_queue(ctx.clients.queues, ctx.settings.storage, ctx.settings.redrive_queue)
    await asyncio.gather(*(queue.send_message(ref.redrive_message()) for ref, _ in reopened.chunks))
    if reopened.chunking is not None:
        await send_continuation(ctx, reopened.chunking)


async def _redrive_here(ctx: Context, run_id: str, reopened: Reopened) -> list[RedrivenChunk]:
    """Chunking carried on to the source's end (if it carries on), then each chunk that needs it ingested
    from its checkpoint (those chunking wrote just now too); what each one queued."""
    if reopened.chunking is not None:
        versioned = await ctx.runs.get_versioned(run_id)
        if versioned is not None:
            await chunk_onward(ctx, *versioned, budget=None)
    record = await ctx.runs.get(run_id)
    if record is None:
        raise no_run(run_id)
    redriven = []
    for ref, previous in await chunks_to_redrive(ctx, record, here=True):
        status = await ingest_here(ctx, ref)
        queued = status.sent - (previous.sent if previous else 0)
        redriven.append(RedrivenChunk(ref.index, status.state, queued, status.error))
    return redriven


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
