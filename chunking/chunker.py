"""Chunking one run: claim the run id, stream the source into chunk blobs, record the outcome.

An invocation reads under a time box (`chunking/time_box.py`): when its time is up, mid-page or
mid-answer, it drops the chunk it was filling and leaves a continuation on the control queue that
resumes at the last chunk boundary. Chunk numbers and boundaries depend only on the source, so a
continuation run twice writes the same chunk blobs (if-none-match keeps the first) and loses none.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import replace

from chunking.request import IngestionRequest
from chunking.source import SourcePosition, SourceReader
from chunking.time_box import OutOfTimeError, TimeBox
from chunking.writer import ChunkWriter
from core.context import Context
from core.contract import Continuation, ResumePosition
from core.errors import ClaimLostError, RunConflictError, SourceError
from core.run_store import RunRecord, chunks_written, utc_now
from core.settings import CHUNKING_TIME_LIMIT, Settings, SourceConfig
from core.storage import trigger_queue

log = logging.getLogger(__name__)


async def start_chunking(ctx: Context, request: IngestionRequest, budget: float | None) -> tuple[RunRecord, bool]:
    """Returns the run's record and whether this call created it (False: the run already existed).

    `budget`: the HTTP call's CHUNKING_TIME_BUDGET (it must answer within 230 s); None on the command line.
    """
    record = RunRecord(
        request.run_id, request.source, request.chunk_size, created_at=utc_now(),
        max_concurrency=request.max_concurrency,
    )  # fmt: skip
    etag = await ctx.runs.create(record)
    if etag is None:
        existing = await ctx.runs.get(request.run_id)
        if existing is None or (existing.source, existing.chunk_size) != (request.source, request.chunk_size):
            raise RunConflictError(
                f"run {request.run_id!r} already exists with different parameters; choose another run_id",
                run_id=request.run_id,
            )
        return existing, False
    return await chunk_onward(ctx, record, etag, budget, http_call=budget is not None), True


async def chunk_onward(
    ctx: Context, record: RunRecord, etag: str, budget: float | None, *, http_call: bool = False
) -> RunRecord:
    """Writes the run's chunks from where it stands (its `resume` position, else the start).

    `budget`: seconds before handing the rest on (None: no limit); `http_call`: an HTTP call, which hands
    on whatever it wrote, rather than a continuation, which must write a chunk before it may.
    Saves the outcome over `etag` only: when another invocation moved the run on meanwhile, this one
    neither saves nor continues (its chunks were the same blobs). Only the source failing fails the run;
    anything else (cancelled, Ctrl-C, a storage error) is raised after keeping what was chunked.
    """
    settings = ctx.settings
    source = settings.source(record.source)
    writer = ChunkWriter(ctx.chunk_container, record.run_id, record.chunk_size, settings.upload_concurrency,
                         chunks=record.chunks or 0, messages=record.messages or 0,
                         max_bytes=settings.chunk_max_bytes)  # fmt: skip
    time_box = _time_box(settings, source, budget, http_call)
    # The run as it stands after each of the last chunks filled here: the ones that may still be uploading.
    filled: deque[RunRecord] = deque(maxlen=settings.upload_concurrency + 1)
    try:
        async with SourceReader(source, settings.source_timeout, settings.source_retry, settings.source_limits,
                                time_box, settings.chunk_max_bytes) as reader:  # fmt: skip
            start = SourcePosition(record.resume or ResumePosition(), record.pages, record.page_before)
            resume = await _read_into(writer, reader, start, time_box, settings,
                                      lambda at: filled.append(_paused(record, writer, at)))  # fmt: skip
        await writer.close()
    except SourceError as exc:
        await writer.close()
        record = record.failed(ctx.redact(str(exc)), writer.chunks, writer.messages)
    except BaseException:
        await _keep_progress(ctx, record, etag, filled, hand_on=budget is not None)
        raise
    else:
        record = record.finished(writer.chunks, writer.messages) if resume is None else _paused(record, writer, resume)
    await _save(ctx, record, etag, hand_on=budget is not None)
    return record


async def _read_into(
    writer: ChunkWriter, reader: SourceReader, start: SourcePosition, time_box: TimeBox, settings: Settings,
    keep: Callable[[SourcePosition], None],
) -> SourcePosition | None:  # fmt: skip
    """Feeds the source to the writer (`keep` hears of each chunk boundary) until it is exhausted (None)
    or the time is up: then drops the chunk not yet full and returns the last boundary, to resume at."""
    boundary: SourcePosition | None = start
    try:
        async with aclosing(reader.items(start, writer.messages)) as items:
            async for item in items:
                if await writer.add(item):
                    boundary = reader.after_last if writer.at_chunk_boundary else reader.before_last
                    time_box.chunk_written()
                    if boundary is not None:
                        keep(boundary)
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


def _paused(record: RunRecord, writer: ChunkWriter, at: SourcePosition) -> RunRecord:
    """The run with what `writer` wrote, to resume `at`."""
    paused = record.paused(writer.chunks, writer.messages, at.resume)
    return replace(paused, pages=at.pages, page_before=at.page_before)


def _time_box(settings: Settings, source: SourceConfig, budget: float | None, http_call: bool) -> TimeBox:
    paged = source.pagination != "none"
    if budget is None:
        return TimeBox()
    if http_call:
        return TimeBox.http_call(budget, paged)
    return TimeBox.continuation(budget, settings.chunking_time_limit, paged)


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
        control = await trigger_queue(ctx.clients.queues, ctx.settings.storage, ctx.settings.control_queue)
        await control.send_message(Continuation(record.run_id, record.resume).encode())
