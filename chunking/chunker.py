"""Chunking one run: claim the run id, stream the source into chunk blobs, record the outcome.

With a time budget, chunking stops at the first chunk boundary past it and leaves a continuation on
the control queue; chunk numbers depend only on the source, so a continuation run twice writes the
same chunk blobs (if-none-match keeps the first) and loses none.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from contextlib import aclosing

from chunking.control_queue import enqueue_continuation
from chunking.request import IngestionRequest
from chunking.source import SourceReader
from chunking.writer import ChunkWriter
from core.context import Context
from core.contract import Continuation, ResumePosition
from core.errors import ClaimLostError, RunConflictError, SourceError
from core.run_store import RunRecord, chunks_written, utc_now

log = logging.getLogger(__name__)


async def start_chunking(ctx: Context, request: IngestionRequest, budget: float | None) -> tuple[RunRecord, bool]:
    """Returns the run's record and whether this call created it (False: the run already existed)."""
    record = RunRecord(request.run_id, request.source, request.chunk_size, created_at=utc_now())
    etag = await ctx.runs.create(record)
    if etag is None:
        existing = await ctx.runs.get(request.run_id)
        if existing is None or (existing.source, existing.chunk_size) != (request.source, request.chunk_size):
            raise RunConflictError(
                f"run {request.run_id!r} already exists with different parameters; choose another run_id",
                run_id=request.run_id,
            )
        return existing, False
    return await chunk_onward(ctx, record, etag, budget), True


async def chunk_onward(ctx: Context, record: RunRecord, etag: str, budget: float | None) -> RunRecord:
    """Writes the run's chunks from where it stands (its `resume` position, else the start).

    Saves the outcome over `etag` only: when another invocation moved the run on meanwhile, this one
    neither saves nor continues (its chunks were the same blobs). Only the source failing fails the run;
    anything else (cancelled, Ctrl-C, a storage error) is raised after keeping what was chunked.
    """
    settings = ctx.settings
    writer = ChunkWriter(ctx.chunk_container, record.run_id, record.chunk_size, settings.upload_concurrency,
                         chunks=record.chunks or 0, messages=record.messages or 0)  # fmt: skip
    source = settings.source(record.source)
    # A paged source stops at the budget; one unpaged response is read whole (re-reading it to skip
    # what was taken would cost more than finishing it: a million IDs stream in seconds).
    deadline = None if budget is None or source.pagination == "none" else time.monotonic() + budget
    # The run as it stands after each of the last chunks filled here: the ones that may still be uploading.
    filled: deque[RunRecord] = deque(maxlen=settings.upload_concurrency + 1)
    resume: ResumePosition | None = None
    start = record.resume or ResumePosition()
    try:
        async with (
            SourceReader(source, settings.source_timeout, settings.source_retry) as reader,
            aclosing(reader.items(start)) as items,
        ):
            async for item, after in items:
                await writer.add(item)
                if after and writer.at_chunk_boundary:
                    filled.append(record.paused(writer.chunks, writer.messages, after))
                    if deadline and time.monotonic() >= deadline:
                        resume = after
                        break
        await writer.close()
    except SourceError as exc:
        await writer.close()
        record = record.failed(str(exc), writer.chunks, writer.messages)
    except BaseException:
        await _keep_progress(ctx, record, etag, filled, hand_on=budget is not None)
        raise
    else:
        if resume is None:
            record = record.finished(writer.chunks, writer.messages)
        else:
            record = record.paused(writer.chunks, writer.messages, resume)
    await _save(ctx, record, etag, hand_on=budget is not None)
    return record


async def _keep_progress(
    ctx: Context, record: RunRecord, etag: str, filled: deque[RunRecord], *, hand_on: bool
) -> None:
    """Leaves the run `chunking`, resumable right after its last chunk known to be written (uploads in
    flight may be lost; chunk numbers must stay those of the source's order), else where it was saved.

    `hand_on`: in the app, the rest goes to the control queue (a retry of the interrupted continuation
    finds it stale). Best effort: the interruption is what the caller hears about.
    """
    try:
        written = {ref.index for ref in await chunks_written(ctx.chunk_container, record.run_id)}
        first_missing = next(index for index in itertools.count(record.chunks or 0) if index not in written)
        kept = [paused for paused in filled if (paused.chunks or 0) <= first_missing]
        if kept:
            await _save(ctx, kept[-1], etag, hand_on=hand_on)
    except Exception as exc:
        log.warning("run %s: chunking was interrupted and its progress not saved: %r", record.run_id, exc)


async def _save(ctx: Context, record: RunRecord, etag: str, *, hand_on: bool) -> None:
    """Saves the record over `etag` (else leaves the run to the invocation that moved it on); with
    `hand_on` (a budget: the app), a paused run's rest goes to the control queue."""
    try:
        await ctx.runs.save(record, if_match=etag)
    except ClaimLostError:
        log.info("run %s was moved on by another invocation; leaving it to that one", record.run_id)
        return
    if hand_on and record.resume is not None:
        continuation = Continuation(record.run_id, record.resume)
        await enqueue_continuation(ctx.clients.queues, ctx.settings.storage, ctx.settings.control_queue, continuation)
