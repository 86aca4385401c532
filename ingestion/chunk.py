"""Ingesting one chunk: claim it, read and check it, enqueue from its checkpoint, record the outcome.

A stopped run (cancelled, or failed past its tolerance: core/run_events.py) is checked once the chunk
is claimed and at each checkpoint; the chunk then stops, `stopped` with what it sent, for a redrive to
resume. A chunk whose blob is gone is marked failed, saying so; one whose run was purged is not sent.
Every outcome, even "already ingested", settles the run (its one completion event).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Mapping
from dataclasses import dataclass

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from core.context import Context
from core.contract import (
    COUNT_METADATA,
    FIRST_METADATA,
    GENERATION_METADATA,
    ChunkRef,
    chunk_lines,
    decode_chunk,
    expected_count,
    first_item,
)
from core.delivery import item_room
from core.errors import ChunkError, QueueSendError, RunNotFoundError
from core.redact import public_reason
from core.run_events import settle_run
from core.run_store import ChunkStatus, RunRecord, new_owner
from core.settings import MESSAGE_ENCODINGS
from ingestion.backlog import Backlog, keep_sample, look
from ingestion.claim import claim_chunk
from ingestion.large_messages import fit_messages
from ingestion.outgoing import Outgoing, plain, shaped
from ingestion.target import Spread, forget_queues, target_sender
from ingestion.window import send_window


@dataclass(frozen=True)
class ChunkBlob:
    """A chunk's bytes and metadata as the blob trigger's host already read them."""

    data: bytes
    metadata: Mapping[str, str] | None


def delivered_generation(blob: ChunkBlob | None) -> str:
    """The run generation a delivered chunk was written for ("": not told)."""
    return (blob.metadata or {}).get(GENERATION_METADATA, "") if blob is not None else ""


async def ingest_chunk(ctx: Context, ref: ChunkRef, blob: ChunkBlob | None = None) -> ChunkStatus:
    """Sends what the chunk's checkpoint says is unsent; a chunk that cannot be read is marked failed.

    `blob` is the chunk as the trigger delivered it; without it (a redrive, a resume, a local run) the
    chunk is downloaded. A chunk already ingested sends nothing. Errors from storage propagate (the
    host retries the invocation) after the claim is released, and the retry resumes from the last
    checkpoint.
    """
    status = await _ingest(ctx, ref, blob)
    await settle_run(ctx, ref.run_id)
    return status


async def _ingest(ctx: Context, ref: ChunkRef, blob: ChunkBlob | None) -> ChunkStatus:
    settings = ctx.settings
    claim = await claim_chunk(ctx.runs, ref, new_owner(), settings.lease_seconds)
    if isinstance(claim, ChunkStatus):
        return claim
    try:
        record, stop = await asyncio.gather(ctx.runs.get(ref.run_id), ctx.runs.stop_of(ref.run_id))
        if record is None:
            raise RunNotFoundError(f"chunk {ref.blob_name} not ingested: its run was purged", run_id=ref.run_id)
        if stop is not None:
            return await claim.stop(claim.sent, claim.by_queue, claim.queued)
        blob = await _with_count(ctx.chunk_container, ref, blob)
        if blob is None:
            return await claim.fail(
                f"the chunk blob {ref.blob_name} is gone (a lifecycle rule or someone deleted it) before it was "
                f"ingested: {claim.sent} of its messages were sent, the rest cannot be; write it again (the same "
                "lines) and redrive the run, or accept the loss"
            )
        if (written_for := delivered_generation(blob)) and ref.generation and written_for != ref.generation:
            return await claim.fail(
                f"the chunk blob {ref.blob_name} is of an earlier run with this run_id (generation {written_for}; a "
                "purge cut short left it) and this run has not written its own yet: redrive the run once its "
                "chunking has"
            )
        backlog = await look(ctx, record.max_backlog) if record.max_backlog else None
        if backlog is not None and (backlog.over or claim.back_from_waiting):
            await keep_sample(ctx, ref.run_id, backlog)  # back from waiting: what the consumer drained meanwhile
            if backlog.over:
                return await claim.wait_for_backlog(claim.sent, claim.by_queue, claim.queued)
        try:
            outgoing = await _outgoing(ctx, ref, record, blob)
        except ChunkError as exc:
            return await claim.fail(public_reason(str(exc)))
        spread = Spread(outgoing.keys, len(settings.queue_targets))

        def tally(sent: int) -> tuple[int, tuple[int, ...], int | None]:
            """A checkpoint after messages[:sent]: the items they hold, by queue, and (batched) how many."""
            return outgoing.items_before(sent), spread(sent), None if outgoing.starts is None else sent

        waiting: Backlog | None = None

        async def checkpoint(sent: int) -> bool:
            """Saves the checkpoint; False when the run was stopped meanwhile, or a target queue is over the
            run's max_backlog."""
            nonlocal waiting
            await claim.checkpoint(*tally(sent))
            if await ctx.runs.stop_of(ref.run_id) is not None:
                return False
            if record.max_backlog and (backlog := await look(ctx, record.max_backlog)).over:
                waiting = backlog
                return False
            return True

        sent = await send_window(
            await target_sender(ctx),
            outgoing.messages,
            settings.ingest_concurrency,
            start=outgoing.message_of(claim.sent),
            checkpoint=checkpoint,
            every=settings.checkpoint_every,
            keys=None if outgoing.starts is None else outgoing.keys,
        )
    except QueueSendError as exc:
        if not exc.refused:  # retries used up: the host delivers the chunk again, the sweeper redrives it
            with contextlib.suppress(Exception):  # best effort: otherwise the lease simply expires
                await claim.release()
            raise
        # an answer no retry changes (the queue gone, a message refused): failed, visibly, with the service's ids;
        # a deleted queue is made again by the next chunk (its redrive), on this instance too
        forget_queues(ctx)
        return await claim.fail(public_reason(str(exc)))
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: otherwise the lease simply expires
            await claim.release()
        raise
    if sent < len(outgoing.messages):
        if waiting is not None:
            await keep_sample(ctx, ref.run_id, waiting)
            return await claim.wait_for_backlog(*tally(sent))
        return await claim.stop(*tally(sent))
    return await claim.complete(*tally(sent))


async def _outgoing(ctx: Context, ref: ChunkRef, record: RunRecord, blob: ChunkBlob) -> Outgoing:
    """The chunk's messages in its run's shape, an oversized item claim-checked (or refused) first."""
    settings = ctx.settings
    texts = decode_chunk(blob.data, expected_count(blob.metadata))
    store = ctx.clients.blobs.get_container_client(settings.large_message_container)
    delivery = record.delivery
    fit = functools.partial(
        fit_messages, ref=ref, encoding=settings.message_encoding, mode=settings.large_message_mode, store=store,
        ttl=settings.message_ttl,
    )  # fmt: skip
    if delivery.plain:
        return plain(await fit(texts), texts)
    first = first_item(blob.metadata)
    if first is None:
        raise ChunkError(f"the chunk has no {FIRST_METADATA} metadata, which its run's message envelope needs")
    room = {way: item_room(delivery, ref.run_id, way) for way in MESSAGE_ENCODINGS}  # the cut is the same under either
    lines = await fit(chunk_lines(blob.data), room=room, payloads=texts)  # sized as in a message, stored as text
    return shaped(lines, texts, delivery, ref.run_id, first)


async def _with_count(container: ContainerClient, ref: ChunkRef, blob: ChunkBlob | None) -> ChunkBlob | None:
    """The chunk with the metadata that says its line count and generation: as delivered, or read from
    storage, bytes and metadata in one read (None: the blob is gone)."""
    if blob is not None and blob.metadata is not None and COUNT_METADATA in blob.metadata:
        return blob
    try:  # not delivered, or the host passed no metadata (its bytes could be of an earlier blob of the name)
        download = await container.download_blob(ref.blob_name)
        return ChunkBlob(await download.readall(), download.properties.metadata)
    except ResourceNotFoundError:
        return blob  # deleted since the host read it: its bytes are all there is
