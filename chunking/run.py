"""Chunking one run: claim the run id, stream the source into chunk blobs, record the outcome."""

from __future__ import annotations

from chunking.request import IngestionRequest
from chunking.source import stream_items
from chunking.writer import ChunkWriter
from fanout.context import Context
from fanout.errors import RunConflictError, SourceError
from fanout.runs import RunRecord, utc_now


async def chunk_run(ctx: Context, request: IngestionRequest) -> tuple[RunRecord, bool]:
    """Returns the run's record and whether this call created it (False: the run already existed)."""
    record = RunRecord(request.run_id, request.source, request.chunk_size, created_at=utc_now())
    if not await ctx.runs.create(record):
        existing = await ctx.runs.get(request.run_id)
        if existing is None or (existing.source, existing.chunk_size) != (request.source, request.chunk_size):
            raise RunConflictError(
                f"run {request.run_id!r} already exists with different parameters; choose another run_id"
            )
        return existing, False
    return await write_chunks(ctx, record), True


async def write_chunks(ctx: Context, record: RunRecord) -> RunRecord:
    """Streams the source into the run's chunks; chunks an earlier attempt wrote are kept, not rewritten."""
    writer = ChunkWriter(ctx.chunks, record.run_id, record.chunk_size, ctx.settings.upload_concurrency)
    source = ctx.settings.source(record.source)
    try:
        async for item in stream_items(source, ctx.settings.source_timeout, ctx.settings.source_retry):
            await writer.add(item)
    except SourceError as exc:
        await writer.close()
        record = record.failed(str(exc), writer.chunks, writer.messages)
    except BaseException as exc:
        await ctx.runs.save(record.failed(f"chunking stopped: {exc!r}", writer.chunks, writer.messages))
        raise
    else:
        await writer.close()
        record = record.finished(writer.chunks, writer.messages)
    await ctx.runs.save(record)
    return record
