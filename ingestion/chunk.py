"""Ingesting one chunk: claim it, read and check it, enqueue from its checkpoint, record the outcome.

A stopped run (cancelled, or failed past its tolerance: core/run_events.py) is checked once the chunk
is claimed and at each checkpoint; the chunk then stops, `stopped` with what it sent, for a redrive to
resume. A chunk whose blob is gone is marked failed, saying so; one whose run was purged is not sent.
Every outcome, even "already ingested", settles the run (its one completion event).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from core.context import Context
from core.contract import COUNT_METADATA, GENERATION_METADATA, ChunkRef, decode_chunk, expected_count
from core.errors import ChunkError, RunNotFoundError
from core.redact import public_reason
from core.run_events import settle_run
from core.run_store import ChunkStatus, new_owner
from ingestion.claim import claim_chunk
from ingestion.large_messages import fit_messages
from ingestion.target import Spread, target_sender
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
            return await claim.stop(claim.sent)
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
        try:
            messages = decode_chunk(blob.data, expected_count(blob.metadata))
            messages = await fit_messages(
                messages, ref, encoding=settings.message_encoding, mode=settings.large_message_mode,
                store=ctx.clients.blobs.get_container_client(settings.large_message_container),
                ttl=settings.message_ttl,
            )  # fmt: skip
        except ChunkError as exc:
            return await claim.fail(public_reason(str(exc)))
        spread = Spread(messages, len(settings.queue_targets))

        async def checkpoint(sent: int) -> bool:
            """Saves the checkpoint; False when the run was stopped meanwhile."""
            await claim.checkpoint(sent, spread(sent))
            return await ctx.runs.stop_of(ref.run_id) is None

        sent = await send_window(
            await target_sender(ctx),
            messages,
            settings.ingest_concurrency,
            start=claim.sent,
            checkpoint=checkpoint,
            every=settings.checkpoint_every,
        )
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: otherwise the lease simply expires
            await claim.release()
        raise
    if sent < len(messages):
        return await claim.stop(sent, spread(sent))
    return await claim.complete(len(messages), spread(len(messages)))


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
