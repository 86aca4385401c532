"""Chunking one run: claim the run id, stream the source into chunk blobs, record the outcome.

With a time budget, chunking stops at the first chunk boundary past it and leaves a continuation on
the control queue; chunk numbers depend only on the source, so a continuation run twice writes the
same chunk blobs (if-none-match keeps the first) and loses none.
"""

from __future__ import annotations

import time
from contextlib import aclosing

from chunking.control_queue import enqueue_continuation
from chunking.request import IngestionRequest
from chunking.source import SourceReader
from chunking.writer import ChunkWriter
from core.context import Context
from core.contract import Continuation, ResumePosition
from core.errors import ClaimLostError, RunConflictError, SourceError
from core.run_store import RunRecord, utc_now


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


async def chunk_onward(ctx: Context, record: RunRecord, etag: str | None, budget: float | None) -> RunRecord:
    """Writes the run's chunks from where it stands (its `resume` position, else the start).

    Saves the outcome over `etag` only: when another invocation moved the run on meanwhile, this one
    neither saves nor continues (its chunks were the same blobs).
    """
    settings = ctx.settings
    writer = ChunkWriter(ctx.chunk_container, record.run_id, record.chunk_size, settings.upload_concurrency,
                         chunks=record.chunks or 0, messages=record.messages or 0)  # fmt: skip
    source = settings.source(record.source)
    # A paged source stops at the budget; one unpaged response is read whole (re-reading it to skip
    # what was taken would cost more than finishing it: a million IDs stream in seconds).
    deadline = None if budget is None or source.pagination == "none" else time.monotonic() + budget
    resume: ResumePosition | None = None
    start = record.resume or ResumePosition()
    try:
        async with (
            SourceReader(source, settings.source_timeout, settings.source_retry) as reader,
            aclosing(reader.items(start)) as items,
        ):
            async for item, after in items:
                await writer.add(item)
                if deadline and after and writer.at_chunk_boundary and time.monotonic() >= deadline:
                    resume = after
                    break
        await writer.close()
    except SourceError as exc:
        await writer.close()
        record = record.failed(str(exc), writer.chunks, writer.messages)
    except BaseException as exc:
        await ctx.runs.save(record.failed(f"chunking stopped: {exc!r}", writer.chunks, writer.messages))
        raise
    else:
        if resume is None:
            record = record.finished(writer.chunks, writer.messages)
        else:
            record = record.paused(writer.chunks, writer.messages, resume)
    try:
        await ctx.runs.save(record, if_match=etag)
    except ClaimLostError:
        return record
    if record.resume is not None:
        continuation = Continuation(record.run_id, record.resume)
        await enqueue_continuation(ctx.clients.queues, settings.storage, settings.control_queue, continuation)
    return record
