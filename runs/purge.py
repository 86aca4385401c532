"""Retention: delete what a finished run left behind (`DELETE /api/ingestions/{run_id}`, `fanout purge`).

Its chunk blobs, everything of it in the runs container (chunk statuses, concurrency slots, sweep log)
and its claim-check blobs that are older than the messages' time-to-live (a younger one may still be
read by a consumer through a message in the queue: it is kept, and counted in the answer; the storage
lifecycle rule in infra/ deletes it later). A run still chunking or ingesting is refused (409), and so
is one whose completion event is still owed to the webhook (its delivery lives on the mark the purge
deletes). A run whose completion event nobody sent gets it before it goes: one whose sender died, or a
failed run with chunks never ingested (its end is the purge). A new run under the same id deletes what a
racing cancel or finisher wrote after the purge (core/run_store.py `create`).

The run record is marked first (only as it was read: a run changed meanwhile is a 409): from then on the
run reads as gone (no chunk of it is ingested: ingestion/invocation.py refuses a chunk whose run has no
record; the sweeper, status and listing no longer see it) and no new run can take its id. Then everything
else under the run's prefix goes, and the marked record last, which frees the id: a new run under it is
never touched by the purge. The mark is the purge's own: renewed before each slice of deletions, taken
over by another purge only once it has gone unrenewed for PURGE_MARK_STALE (a purge cut short: a start
under the id answers 409 saying so; purging again finishes it), and a purge whose mark was taken over
stops. Where only leftovers are (no record), a stand-in marked record holds the id the same way. Only a
run of which nothing is left is not found (404).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from core.context import Context
from core.contract import SERVICE_DEFAULT_TTL, TTL_METADATA, run_prefix, run_record_blob
from core.errors import RunConflictError, UpdateConflictError
from core.logs import did
from core.run_events import send_unsent_event
from core.run_scope import run_scope
from core.run_store import RunRecord, index_entry
from core.status import run_status
from runs.status import checked_run_id, no_run

log = logging.getLogger(__name__)
RUNNING = ("chunking", "ingesting")
_DELETES_IN_FLIGHT = 32
_DELETES_A_SLICE = 500  # between renewals of the purge's mark: seconds of deletions, far below PURGE_MARK_STALE
PURGE_MARK_STALE = 60.0  # seconds without renewal after which a purge's mark is taken for a dead purge's


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
    """Purges the run (the module's docstring says what goes and what stays); RunConflictError while it runs."""
    started = time.monotonic()
    with run_scope(checked_run_id(run_id)):
        result = await _purge(ctx, run_id)
        did(log, "run %s purged: %s", run_id, result.to_json(), seconds=time.monotonic() - started)
    return result


async def _purge(ctx: Context, run_id: str) -> PurgeResult:
    versioned = await ctx.runs.get_versioned(run_id)  # the record judged below: only it is marked
    status = await run_status(ctx.runs, run_id)
    if status is not None and status.state in RUNNING:
        raise RunConflictError(
            f"run {run_id!r} is still {status.state}; purge it once it has finished (a stalled run: redrive it first)",
            run_id=run_id, state=status.state,
        )  # fmt: skip
    now = time.time()
    chunking = versioned[0] if versioned else None
    if chunking is not None and chunking.leased(now):  # cancelled, but its chunker has not yet seen it
        raise RunConflictError(
            f"run {run_id!r} is {status.state if status else 'being purged'} but its chunking has not yet stopped "
            f"(claimed by {chunking.owner}); purge it once that ends, within {ctx.settings.lease_seconds:g} s",
            run_id=run_id, state=status.state if status else "purging",
        )  # fmt: skip
    busy = [chunk.index for chunk in await ctx.runs.chunk_statuses(run_id) if chunk.leased(now)]
    if busy:  # a failed run's chunks may still be sending
        raise RunConflictError(
            f"run {run_id!r} is {status.state if status else 'being purged'} but chunk {busy[0]} is still being "
            "ingested; purge it once that ends",
            run_id=run_id, state=status.state if status else "purging",
        )  # fmt: skip
    webhook = status.event_webhook if status is not None else None
    if webhook is not None and webhook.state == "pending":  # its delivery lives on the mark the purge deletes
        raise RunConflictError(
            f"run {run_id!r}'s completion event is still owed to the webhook ({webhook.deliveries} deliveries so far: "
            f"{webhook.reason}); purge it once it is delivered or recorded undelivered (with RUN_EVENTS_WEBHOOK "
            "unset, the next sweep records it undelivered)",
            run_id=run_id, state=status.state if status else "purging",
        )  # fmt: skip
    if status is not None:  # not running: its event, unless sent, goes now, as its mark goes with the run
        await send_unsent_event(ctx, run_id)
    blobs = ctx.clients.blobs
    settings = ctx.settings
    runs = blobs.get_container_client(settings.runs_container)
    checks = blobs.get_container_client(settings.large_message_container)
    hold = await _Hold.take(ctx, run_id, versioned, lambda: _anything_left(run_id, ctx.chunk_container, runs, checks))
    index = [index_entry(hold.record)] if hold.record is not None and hold.record.created_at else []
    deleted_checks, kept_checks = await _purge_claim_checks(checks, run_id, settings.message_ttl, hold)
    chunk_names = [name async for name in _names(ctx.chunk_container, run_id)]
    chunk_blobs = await _delete_all(ctx.chunk_container, chunk_names, hold)
    record_blob = run_record_blob(run_id)
    leftovers = [name async for name in _names(runs, run_id) if name != record_blob]
    run_blobs = await _delete_all(runs, index + leftovers, hold)
    await ctx.runs.drop_purged(run_id, await hold.renewed())  # last: until now no new run could take the id
    return PurgeResult(run_id, chunk_blobs, run_blobs + (hold.record is not None), deleted_checks, kept_checks)


@dataclass
class _Hold:
    """A purge's own mark on the run's record (core/run_store.py `mark_purging`): while it holds it, no run can
    be started under the id, so what the purge deletes is the purged run's alone. It is renewed before each
    slice of deletions; a purge that finds it taken over (another purge went on after it seemed dead) stops."""

    ctx: Context
    run_id: str
    record: RunRecord | None  # None: a stand-in record (the run's was gone), or one out of shape
    etag: str

    @classmethod
    async def take(
        cls, ctx: Context, run_id: str, versioned: tuple[RunRecord, str] | None, left: Callable[[], Awaitable[bool]]
    ) -> _Hold:
        """The record as it was judged, marked; a cut-short purge's mark, taken over once it is stale; or a
        stand-in placed where only leftovers are. RunConflictError when the run changed meanwhile, or a purge
        of it is under way; no_run when nothing of it is left."""
        changed = RunConflictError(
            f"run {run_id!r} changed as its purge began (redriven, or started again); look at it and purge it again",
            run_id=run_id, state="purging",
        )  # fmt: skip
        if versioned is not None:
            try:
                return cls(ctx, run_id, versioned[0], await ctx.runs.mark_purging(run_id, versioned[1]))
            except UpdateConflictError:
                raise changed from None
        mark = await ctx.runs.purge_mark(run_id)
        if mark is not None:
            waited = time.time() - mark.marked_at
            if waited < PURGE_MARK_STALE:
                raise RunConflictError(
                    f"run {run_id!r} is being purged (marked {waited:.0f} s ago); if that purge was cut short, purge "
                    f"it again after {PURGE_MARK_STALE - waited:.0f} s",
                    run_id=run_id, state="purging",
                )  # fmt: skip
            try:
                return cls(ctx, run_id, mark.record, await ctx.runs.mark_purging(run_id, mark.etag))
            except UpdateConflictError:
                raise changed from None
        if not await left():
            raise no_run(run_id)
        etag = await ctx.runs.place_purge_mark(run_id)
        if etag is None:
            raise changed
        return cls(ctx, run_id, None, etag)

    async def renewed(self) -> str:
        """The mark's ETag, renewed now; RunConflictError if another purge has taken it over."""
        try:
            self.etag = await self.ctx.runs.mark_purging(self.run_id, self.etag)
        except UpdateConflictError:
            raise RunConflictError(
                f"another purge of run {self.run_id!r} took this one over; it finishes the purge",
                run_id=self.run_id, state="purging",
            ) from None  # fmt: skip
        return self.etag


async def _anything_left(run_id: str, *containers: ContainerClient) -> bool:
    """Whether any blob of the run is left in one of the containers (a purge cut short, an orphan)."""
    for container in containers:
        async for _ in _names(container, run_id):
            return True
    return False


async def _purge_claim_checks(container: ContainerClient, run_id: str, ttl: int | None, hold: _Hold) -> tuple[int, int]:
    """Deletes the run's claim-check blobs whose message has expired: last written (a redrive writes one
    again, then sends its message) longer ago than the time-to-live that message was sent with (its
    metadata; `ttl`, the setting now, for a blob from before it was kept). `-1`: never expires."""
    now = time.time()
    old, young = [], 0
    with contextlib.suppress(ResourceNotFoundError):
        async for blob in container.list_blobs(name_starts_with=run_prefix(run_id), include=["metadata"]):
            kept = (blob.metadata or {}).get(TTL_METADATA, "")
            lifetime = int(kept) if kept.lstrip("-").isdigit() else SERVICE_DEFAULT_TTL if ttl is None else ttl
            if lifetime != -1 and blob.last_modified.timestamp() < now - lifetime:
                old.append(blob.name)
            else:
                young += 1
    return await _delete_all(container, old, hold), young


async def _names(container: ContainerClient, run_id: str) -> AsyncIterator[str]:
    with contextlib.suppress(ResourceNotFoundError):
        async for blob in container.list_blobs(name_starts_with=run_prefix(run_id)):
            yield blob.name


async def _delete_all(container: ContainerClient, names: list[str], hold: _Hold) -> int:
    """Deletes the blobs, a few at a time, the purge's mark renewed before each slice of them; one already
    gone counts as deleted (a purge run again)."""
    limit = asyncio.Semaphore(_DELETES_IN_FLIGHT)

    async def delete(name: str) -> None:
        async with limit:
            with contextlib.suppress(ResourceNotFoundError):
                await container.delete_blob(name)

    for start in range(0, len(names), _DELETES_A_SLICE):
        await hold.renewed()
        await asyncio.gather(*(delete(name) for name in names[start : start + _DELETES_A_SLICE]))
    return len(names)
