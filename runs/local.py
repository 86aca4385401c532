"""A run in one process (the command line's `run` and `resume`): the same work the app's triggers do,
called in order. Chunks are ingested `parallel` at a time (at most the run's `max_concurrency`), as the
blob trigger fans out over a run's chunks in Azure; they share the process's Put Message connections."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from chunking.chunker import chunk_onward
from chunking.chunking_claim import ChunkingClaim
from chunking.request import IngestionRequest
from core.context import Context
from core.contract import ChunkRef
from core.errors import RunConflictError, UpdateConflictError
from core.run_events import settle_run
from core.run_scope import run_scope
from core.run_store import ChunkStatus, run_chunks
from core.status import RunStatus
from core.together import run_together
from ingestion.chunk import ingest_chunk
from runs.start import start_run
from runs.status import checked_run_id, get_status, no_run

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
MAX_PARALLEL = 64


def default_parallel() -> int:
    """Chunks in flight by default: two per CPU (a chunk waits on storage most of the time), at least 2."""
    return max(2, 2 * (os.cpu_count() or 1))


async def run_here(
    ctx: Context, request: IngestionRequest, progress: Progress | None = None, *, parallel: int = 1
) -> RunStatus:
    """Starts the run, chunks its source to the end, then ingests every chunk; the run's final status."""
    record, _ = await start_run(ctx, request, budget=None)
    if progress:
        progress(f"chunked: {record.messages:,} messages in {record.chunks:,} chunks ({record.state})")
    return await _ingest_and_report(ctx, record.run_id, progress, parallel)


async def resume_here(ctx: Context, run_id: str, progress: Progress | None = None, *, parallel: int = 1) -> RunStatus:
    """Finishes a run whose process died or was interrupted: chunking from where it was saved (if it
    never reached its source's end), then every chunk not ingested."""
    versioned = await ctx.runs.get_versioned(checked_run_id(run_id))
    if versioned is None:
        raise no_run(run_id)
    if versioned[0].state == "chunking":
        try:
            versioned = await ChunkingClaim.wait_for_free(ctx.runs, run_id, ctx.settings.lease_seconds)
            if versioned is not None:
                await chunk_onward(ctx, *versioned, budget=None)
        except UpdateConflictError as exc:
            raise RunConflictError(f"{exc}: resume the run once that chunker has stopped", run_id=run_id) from None
    return await _ingest_and_report(ctx, run_id, progress, parallel)


async def ingest_pending_chunks(
    ctx: Context, run_id: str, progress: Progress | None = None, *, parallel: int = 1
) -> None:
    """Ingests every chunk of the run, each from its checkpoint, `parallel` at a time (as concurrent blob
    trigger invocations would), started in order; ingested chunks are skipped. The first error stops the
    rest, each chunk resumable from its last checkpoint."""
    record = await ctx.runs.get(run_id)
    if record is None:
        raise no_run(run_id)
    ingested = {status.index for status in await ctx.runs.chunk_statuses(run_id) if status.state == "ingested"}
    refs = await run_chunks(ctx.chunk_container, record)
    waiting = [ref for ref in refs if ref.index not in ingested]
    pending = iter(waiting)
    done = len(refs) - len(waiting)

    async def ingest_next() -> None:
        nonlocal done
        for ref in pending:
            status = await ingest_here(ctx, ref, progress)
            done += 1
            if progress:
                progress(f"chunk {done}/{len(refs)} {status.state}: {status.sent:,} messages")

    await run_together(ingest_next() for _ in range(parallel))


async def ingest_here(ctx: Context, ref: ChunkRef, progress: Progress | None = None) -> ChunkStatus:
    """The chunk ingested from its checkpoint in this process, waiting here (not handed back: nothing would
    take it up) while a target queue is over its run's max_backlog; its final status."""
    with run_scope(ref.run_id, ref.index):  # log lines carry the chunk, its Put Message retries are counted
        status = await ingest_chunk(ctx, ref)
        said = False
        while status.waits_on_backlog:
            line = (f"chunk {ref.index} waits at {status.sent:,}: a target queue is over the run's max_backlog; "
                    f"looking again in {ctx.settings.backlog_retry_seconds} s")  # fmt: skip
            if progress:
                progress(line)
            elif not said:  # no terminal to redraw: said once a wait, in the log
                log.warning("run %s: %s", ref.run_id, line)
                said = True
            await asyncio.sleep(ctx.settings.backlog_retry_seconds)
            status = await ingest_chunk(ctx, ref)
    return status


async def _ingest_and_report(ctx: Context, run_id: str, progress: Progress | None, parallel: int) -> RunStatus:
    record = await ctx.runs.get(run_id)
    if record is not None and record.max_concurrency:  # the run's own cap, as its blob triggers keep to it
        parallel = min(parallel, record.max_concurrency)
    await ingest_pending_chunks(ctx, run_id, progress, parallel=parallel)
    await settle_run(ctx, run_id)  # each chunk settles it too, but a resume may find nothing left to ingest
    return await get_status(ctx, run_id)
