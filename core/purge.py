"""Retention: delete what a finished run left behind (`DELETE /api/ingestions/{run_id}`, `fanout purge`).

Its chunk blobs, everything of it in the runs container (chunk statuses, concurrency slots, sweep log)
and its claim-check blobs that are older than the messages' time-to-live (a younger one may still be
read by a consumer through a message in the queue: it is kept, and counted in the answer; the storage
lifecycle rule in infra/ deletes it later). The run record goes last, so a purge cut short can be run
again. A run still chunking or ingesting is refused (409).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from core.context import Context
from core.contract import run_prefix, run_record_blob
from core.errors import RunConflictError, RunNotFoundError
from core.status import run_status

SERVICE_DEFAULT_TTL = 7 * 24 * 3600
RUNNING = ("chunking", "ingesting")
_DELETES_IN_FLIGHT = 32


@dataclass(frozen=True)
class PurgeResult:
    run_id: str
    chunk_blobs: int
    run_blobs: int  # the record, chunk statuses, slots, sweep log
    claim_checks_deleted: int
    claim_checks_kept: int  # younger than the messages' TTL

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def purge_run(ctx: Context, run_id: str) -> PurgeResult:
    status = await run_status(ctx.runs, run_id)
    if status is None:
        raise RunNotFoundError(f"no run {run_id!r}", run_id=run_id)
    if status.state in RUNNING:
        raise RunConflictError(
            f"run {run_id!r} is still {status.state}; purge it once it has finished (a stalled run: redrive it first)",
            run_id=run_id, state=status.state,
        )  # fmt: skip
    now = time.time()
    busy = [chunk.index for chunk in await ctx.runs.chunk_statuses(run_id) if chunk.leased(now)]
    if busy:  # a failed run's chunks may still be sending
        raise RunConflictError(
            f"run {run_id!r} is {status.state} but chunk {busy[0]} is still being ingested; purge it once that ends",
            run_id=run_id, state=status.state,
        )  # fmt: skip
    blobs = ctx.clients.blobs
    settings = ctx.settings
    deleted_checks, kept_checks = await _purge_claim_checks(
        blobs.get_container_client(settings.large_message_container), run_id, settings.message_ttl
    )
    chunk_blobs = await _delete_all(ctx.chunk_container, [name async for name in _names(ctx.chunk_container, run_id)])
    runs = blobs.get_container_client(settings.runs_container)
    others = [name async for name in _names(runs, run_id) if name != run_record_blob(run_id)]
    run_blobs = await _delete_all(runs, others) + await _delete_all(runs, [run_record_blob(run_id)])
    return PurgeResult(run_id, chunk_blobs, run_blobs, deleted_checks, kept_checks)


async def _purge_claim_checks(container: ContainerClient, run_id: str, ttl: int | None) -> tuple[int, int]:
    """Deletes the run's claim-check blobs older than the TTL (none with `-1`, never expires)."""
    lifetime = SERVICE_DEFAULT_TTL if ttl is None else ttl
    cutoff = time.time() - lifetime
    old, young = [], 0
    with contextlib.suppress(ResourceNotFoundError):
        async for blob in container.list_blobs(name_starts_with=run_prefix(run_id)):
            written = (blob.creation_time or blob.last_modified).timestamp()
            if lifetime != -1 and written < cutoff:
                old.append(blob.name)
            else:
                young += 1
    return await _delete_all(container, old), young


async def _names(container: ContainerClient, run_id: str) -> AsyncIterator[str]:
    with contextlib.suppress(ResourceNotFoundError):
        async for blob in container.list_blobs(name_starts_with=run_prefix(run_id)):
            yield blob.name


async def _delete_all(container: ContainerClient, names: list[str]) -> int:
    """Deletes the blobs, a few at a time; one already gone counts as deleted (a purge run again)."""
    limit = asyncio.Semaphore(_DELETES_IN_FLIGHT)

    async def delete(name: str) -> None:
        async with limit:
            with contextlib.suppress(ResourceNotFoundError):
                await container.delete_blob(name)

    await asyncio.gather(*(delete(name) for name in names))
    return len(names)
