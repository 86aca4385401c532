"""Chunking one run: claim the run id, stream the source into chunk blobs, record the outcome.

An invocation claims the run (chunking/chunking_claim.py) and keeps its progress saved while it reads:
the run always says where chunking carries on, however the invocation ends. It reads under a time box
(`chunking/time_box.py`): when its time is up, mid-page or mid-answer, it drops the chunk it was filling
and leaves a continuation on the control queue that resumes at the last chunk boundary. A stopped run
(cancelled, or failed past its tolerance) is checked at each new page and each chunk written: chunking
then stops the same way but hands nothing on; a redrive carries it on from there. When the source fails
the run, what was read is written and the run keeps where it stopped: a redrive carries on from there.
Chunk numbers and boundaries depend only on the source, so a continuation run twice writes the same
chunk blobs (if-none-match keeps the first) and loses none.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace

from chunking.chunking_claim import ChunkingClaim
from chunking.request import IngestionRequest
from chunking.source import SourcePosition, SourceReader
from chunking.time_box import OutOfTimeError, TimeBox
from chunking.writer import ChunkConflictError, ChunkWriter
from core.context import Context
from core.continuations import send_continuation
from core.contract import ResumePosition
from core.errors import RunConflictError, SourceError, UpdateConflictError
from core.redact import public_reason
from core.run_events import settle_run
from core.run_store import RunRecord, utc_now
from core.settings import CHUNKING_TIME_LIMIT, Settings, SourceConfig

log = logging.getLogger(__name__)


async def start_chunking(ctx: Context, request: IngestionRequest, budget: float | None) -> tuple[RunRecord, bool]:
    """Returns the run's record and whether this call created it (False: the run already existed).

    `budget`: the HTTP call's CHUNKING_TIME_BUDGET (it must answer within 230 s); None on the command line.
    """
    now = utc_now()
    delivery = request.delivery
    record = RunRecord(
        request.run_id, request.source, request.chunk_size, created_at=now, updated_at=now,
        max_concurrency=request.max_concurrency, max_failed_chunks=request.max_failed_chunks,
        max_failed_percent=request.max_failed_percent, batch_max_items=delivery.batch_max_items,
        batch_max_bytes=delivery.batch_max_bytes, batch_input=delivery.batch_input, envelope=delivery.envelope,
        max_backlog=request.max_backlog,
        chunk_max_bytes=ctx.settings.chunk_max_bytes, page_size=ctx.settings.source(request.source).page_size,
        generation=secrets.token_hex(8),
    )  # fmt: skip
    etag = await ctx.runs.create(record)
    if etag is None:
        existing = await ctx.runs.get(request.run_id)
        if existing is None:  # a purge marked it
            raise RunConflictError(
                f"run {request.run_id!r} is being purged (or a purge of it was cut short: purge it again); start "
                "it once the purge has ended, or choose another run_id",
                run_id=request.run_id,
            )
        if _asked(existing) != _asked(record):
            raise RunConflictError(
                f"run {request.run_id!r} already exists with different parameters; choose another run_id",
                run_id=request.run_id,
            )
        return existing, False
    return await chunk_onward(ctx, record, etag, budget, http_call=budget is not None), True


def _asked(record: RunRecord) -> tuple[object, ...]:
    """What a start request set: the same again starts nothing new; different is a conflict."""
    return (
        record.source, record.chunk_size, record.max_concurrency, record.max_failed_chunks, record.max_failed_percent,
        record.delivery, record.max_backlog,
    )  # fmt: skip


@dataclass(frozen=True)
class _Read:
    """How reading ended: where to resume (None: the source is exhausted), whether the run was stopped,
    and the source's failure, if it failed (then `resume` is just after the last item written)."""

    resume: SourcePosition | None
    stopped: bool = False
    error: SourceError | None = None
    at: RunRecord | None = None  # the run to fail as it stood before a chunk found written otherwise


async def chunk_onward(
    ctx: Context, record: RunRecord, etag: str, budget: float | None, *, http_call: bool = False
) -> RunRecord:
    """Writes the run's chunks from where it stands (its `resume` position); returns the run as saved.

    `budget`: seconds before handing the rest on (None: no limit); `http_call`: an HTTP call, which hands
    on whatever it wrote, rather than a continuation, which must write a chunk before it may.
    UpdateConflictError when another invocation is chunking the run, or the run moved on since `etag`; an
    invocation that loses its claim while it reads stops and saves nothing. Only the source failing
    fails the run; anything else (Ctrl-C, a storage error) is raised after the progress is saved.
    """
    settings = ctx.settings
    claim = await ChunkingClaim.take(ctx.runs, record, etag, settings.lease_seconds)
    # What decides where a chunk or a page ends is the run's own, from its start: an operator changing it does
    # not move positions saved before (records from before these were kept take the settings).
    source = settings.source(record.source)
    source = replace(source, page_size=record.page_size or source.page_size)
    max_bytes = record.chunk_max_bytes or settings.chunk_max_bytes
    writer = ChunkWriter(ctx.chunk_container, record.run_id, record.generation, record.chunk_size,
                         settings.upload_concurrency, chunks=record.chunks or 0, messages=record.messages or 0,
                         max_bytes=max_bytes)  # fmt: skip
    # The run as it stands after each of the last chunks filled here: the ones that may still be uploading.
    filled: deque[RunRecord] = deque(maxlen=settings.upload_concurrency + 1)

    def progress() -> RunRecord:
        """The run after the last chunk known written (else as last saved): safe to resume from."""
        written = [paused for paused in filled if (paused.chunks or 0) <= writer.uploaded]
        return written[-1] if written else claim.record

    hand_on = budget is not None
    start = SourcePosition(record.resume or ResumePosition(), record.pages, record.page_before, record.seen)
    try:
        async with claim.kept(progress):
            time_box = _time_box(settings, source, budget, http_call)
            async with SourceReader(source, settings.source_timeout, settings.source_retry, settings.source_limits,
                                    time_box, max_bytes, settings.network) as reader:  # fmt: skip
                read = await _read_into(writer, reader, start, time_box, settings,
                                        lambda at: filled.append(_paused(record, writer, at)),
                                        lambda: _is_stopped(ctx, record.run_id))  # fmt: skip
            await writer.close()
    except UpdateConflictError:
        log.warning("run %s: chunking stopped, its claim was lost (taken over, or the run purged)", record.run_id)
        raise
    except ChunkConflictError as exc:  # the run stops as it stood before that chunk, its items counted so
        at = max((paused for paused in (record, claim.record, *filled) if (paused.chunks or 0) <= exc.index),
                 key=lambda paused: paused.chunks or 0)  # fmt: skip
        read = _Read(None, error=exc, at=at)
    except SourceError as exc:  # the source's settings are wrong: it was never read
        read = _Read(start, error=exc)
    except BaseException:
        await _keep_progress(ctx, claim, progress(), hand_on=hand_on)
        raise
    if read.at is not None:
        record = read.at.failed(public_reason(str(read.error)), read.at.chunks or 0, read.at.messages or 0)
    elif read.error is not None:  # with what the writer wrote, and where reading stopped (nowhere: at the end)
        at_failure = _paused(record, writer, read.resume) if read.resume else replace(record, resume=None)
        record = at_failure.failed(public_reason(str(read.error)), writer.chunks, writer.messages)
    elif read.resume is None:
        record = record.chunked(writer.chunks, writer.messages)
    else:
        record = _paused(record, writer, read.resume)
    try:
        await claim.save(record, release=True)
    except UpdateConflictError:
        log.info("run %s was moved on by another invocation; leaving it to that one", record.run_id)
        return record
    if record.state == "chunking" and hand_on and not read.stopped:
        await send_continuation(ctx, record)
    if record.state != "chunking" or read.stopped:
        await settle_run(ctx, record.run_id)
    return record


class _StoppedError(Exception):
    """The run was stopped (cancelled, or failed past its tolerance) while it was being chunked."""


async def _is_stopped(ctx: Context, run_id: str) -> bool:
    return await ctx.runs.stop_of(run_id) is not None


async def _read_into(
    writer: ChunkWriter, reader: SourceReader, start: SourcePosition, time_box: TimeBox, settings: Settings,
    keep: Callable[[SourcePosition], None], stopped: Callable[[], Awaitable[bool]],
) -> _Read:  # fmt: skip
    """Feeds the source to the writer (`keep` hears of each chunk boundary) until it is exhausted, the
    time is up or the run is `stopped` (checked at each new page and each chunk written): then drops the
    chunk not yet full and says to resume at the last boundary. When the source fails, the chunk not yet
    full is kept, to be written, and reading resumes after its last item."""
    boundary: SourcePosition | None = start
    page = reader.pages
    if await stopped():
        return _Read(start, stopped=True)
    try:
        async with aclosing(reader.items(start, writer.messages)) as items:
            async for item in items:
                try:
                    closed = await writer.add(item)
                except ChunkConflictError:
                    raise
                except SourceError as exc:
                    return _Read(reader.before_last, error=SourceError(f"{exc}: {reader.last_item}"))
                if closed:
                    boundary = reader.after_last if writer.at_chunk_boundary else reader.before_last
                    time_box.chunk_written()
                    if boundary is not None:  # None: the source has nothing more, the run is chunked
                        keep(boundary)
                        if await stopped():
                            raise _StoppedError
                if boundary is not None and time_box.is_up():
                    raise OutOfTimeError
                if reader.pages != page:
                    page = reader.pages
                    if boundary is not None and await stopped():
                        raise _StoppedError
    except _StoppedError:
        writer.drop_partial()
        return _Read(boundary, stopped=True)
    except OutOfTimeError:
        if not time_box.may_hand_on:
            error = SourceError(
                f"read no chunk of {writer.chunk_size} items within {CHUNKING_TIME_LIMIT.name}="
                f"{settings.chunking_time_limit:g} s: the source is too slow for chunks this size; start the run "
                f"with a smaller chunk_size, or raise {CHUNKING_TIME_LIMIT.name} (below the function timeout)"
            )
            writer.drop_partial()
            return _Read(boundary, error=error)
        writer.drop_partial()
        return _Read(boundary)
    except ChunkConflictError:
        raise
    except SourceError as exc:
        return _Read(reader.after_last, error=exc)
    return _Read(None)


def _paused(record: RunRecord, writer: ChunkWriter, at: SourcePosition) -> RunRecord:
    """The run with what `writer` wrote, to resume `at`."""
    return replace(record, chunks=writer.chunks, messages=writer.messages, resume=at.resume, pages=at.pages,
                   page_before=at.page_before, seen=at.seen)  # fmt: skip


def _time_box(settings: Settings, source: SourceConfig, budget: float | None, http_call: bool) -> TimeBox:
    paged = source.pagination != "none"
    if budget is None:
        return TimeBox()
    if http_call:
        return TimeBox.http_call(budget, paged)
    return TimeBox.continuation(budget, settings.chunking_time_limit, paged)


async def _keep_progress(ctx: Context, claim: ChunkingClaim, progress: RunRecord, *, hand_on: bool) -> None:
    """After an interruption: the run stays `chunking`, resumable right after its last chunk known written,
    its claim let go; in the app (`hand_on`) the rest goes to the control queue. Best effort: the
    interruption is what the caller hears about, and the sweeper resumes a run nobody moves."""
    try:
        await claim.save(progress, release=True)
        if hand_on:
            await send_continuation(ctx, progress)
    except Exception as exc:
        log.warning("run %s: chunking was interrupted and its progress not saved: %r", progress.run_id, exc)
