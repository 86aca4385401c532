"""Chunking one run: claim the run id, stream the source into chunk blobs, record the outcome.

An invocation reads under a time box (`chunking/time_box.py`): when its time is up, mid-page or
mid-answer, it drops the chunk it was filling and leaves a continuation on the control queue that
resumes at the last chunk boundary. Chunk numbers and boundaries depend only on the source, so a
continuation run twice writes the same chunk blobs (if-none-match keeps the first) and loses none.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import replace

from chunking.control_queue import enqueue_continuation
from chunking.request import IngestionRequest
from chunking.source import SourcePosition, SourceReader
from chunking.time_box import OutOfTimeError, TimeBox
from chunking.writer import ChunkWriter
from core.context import Context
from core.contract import Continuation, ResumePosition
from core.errors import ClaimLostError, RunConflictError, SourceError
from core.run_store import RunRecord, utc_now
from core.settings import CHUNKING_TIME_LIMIT, Settings, SourceConfig


async def start_chunking(ctx: Context, request: IngestionRequest, budget: float | None) -> tuple[RunRecord, bool]:
    """Returns the run's record and whether this call created it (False: the run already existed).

    `budget`: the HTTP call's CHUNKING_TIME_BUDGET (it must answer within 230 s); None on the command line.
    """
    record = RunRecord(request.run_id, request.source, request.chunk_size, created_at=utc_now())
    etag = await ctx.runs.create(record)
    if etag is None:
        existing = await ctx.runs.get(request.run_id)
        if existing is None or (existing.source, existing.chunk_size) != (request.source, request.chunk_size):
            raise RunConflictError(
                f"run {request.run_id!r} already exists with different parameters; choose another run_id"
            )
        return existing, False
    return await chunk_onward(ctx, record, etag, budget, http_call=budget is not None), True


async def chunk_onward(
    ctx: Context, record: RunRecord, etag: str | None, budget: float | None, *, http_call: bool = False
) -> RunRecord:
    """Writes the run's chunks from where it stands (its `resume` position, else the start).

    `budget`: seconds before handing the rest on (None: no limit); `http_call`: an HTTP call, which hands
    on whatever it wrote, rather than a continuation, which must write a chunk before it may.
    Saves the outcome over `etag` only: when another invocation moved the run on meanwhile, this one
    neither saves nor continues (its chunks were the same blobs).
    """
    settings = ctx.settings
    source = settings.source(record.source)
    writer = ChunkWriter(ctx.chunk_container, record.run_id, record.chunk_size, settings.upload_concurrency,
                         chunks=record.chunks or 0, messages=record.messages or 0,
                         max_bytes=settings.chunk_max_bytes)  # fmt: skip
    time_box = _time_box(settings, source, budget, http_call)
    start = SourcePosition(record.resume or ResumePosition(), record.pages)
    try:
        async with SourceReader(source, settings.source_timeout, settings.source_retry, settings.source_limits,
                                time_box, settings.chunk_max_bytes) as reader:  # fmt: skip
            resume = await _read_into(writer, reader, start, time_box, settings)
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
            record = replace(record.paused(writer.chunks, writer.messages, resume.resume), pages=resume.pages)
    try:
        await ctx.runs.save(record, if_match=etag)
    except ClaimLostError:
        return record
    if record.resume is not None:
        continuation = Continuation(record.run_id, record.resume)
        await enqueue_continuation(ctx.clients.queues, settings.storage, settings.control_queue, continuation)
    return record


async def _read_into(
    writer: ChunkWriter, reader: SourceReader, start: SourcePosition, time_box: TimeBox, settings: Settings
) -> SourcePosition | None:
    """Feeds the source to the writer until it is exhausted (None) or the time is up: then drops the
    chunk not yet full and returns the last chunk boundary, where the next invocation resumes."""
    boundary: SourcePosition | None = start
    try:
        async with aclosing(reader.items(start, writer.messages)) as items:
            async for item in items:
                if await writer.add(item):
                    boundary = reader.after_last if writer.at_chunk_boundary else reader.before_last
                    time_box.progressed = True
                if boundary is not None and time_box.is_up():
                    raise OutOfTimeError
    except OutOfTimeError:
        if not time_box.may_hand_on:
            raise SourceError(
                f"read no chunk of {writer.chunk_size} items within {CHUNKING_TIME_LIMIT.name}="
                f"{settings.chunking_time_limit:g} s: the source is too slow for chunks this size; start the run "
                f"with a smaller chunk_size, or raise {CHUNKING_TIME_LIMIT.name} (below the function timeout)"
            ) from None
        writer.drop_partial()
        return boundary
    return None


def _time_box(settings: Settings, source: SourceConfig, budget: float | None, http_call: bool) -> TimeBox:
    paged = source.pagination != "none"
    if budget is None:
        return TimeBox()
    if http_call:
        return TimeBox.http_call(budget, paged)
    return TimeBox.continuation(budget, settings.chunking_time_limit, paged)
