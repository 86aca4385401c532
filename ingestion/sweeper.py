"""The sweeper: a timer (SWEEP_SCHEDULE) that heals stalls nobody else would notice.

Each sweep queues a redrive (REDRIVE_QUEUE, one message a chunk; the `redrive_chunk` trigger ingests it
from its checkpoint) for:
- each chunk in the Event Grid dead-letter container (EVENT_GRID_DEADLETTER_CONTAINER): its dead-letter
  blob is deleted once the redrives are queued; one that is not a list of events stays, with a warning;
- each chunk blob that has no status SWEEP_STALE_SECONDS after it was written (its event was dropped, or
  the host gave up on it before it started: a poison blob), unless its run's `max_concurrency` slots are
  all taken (then it is waiting its turn on the redrive queue);
- each chunk whose claim's lease ran out and that has not moved for SWEEP_STALE_SECONDS (its invocation
  died, or the host's retries were spent).
A chunk that is leased, ingested or failed is left alone (a failed chunk needs a fix and a redrive by
hand). At most SWEEP_MAX_REDRIVES redrives a sweep; the rest wait for the next one. What a sweep did is
in the log and, per run, in the run's status (`sweeps`). A redrive that is already queued may be queued
again: the chunk's claim makes the second one send nothing.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue.aio import QueueClient

from core.context import Context, app_context
from core.contract import ChunkRef, is_run_id, run_prefix
from core.errors import ChunkError, ClaimLostError
from core.run_scope import run_scope
from core.run_store import ChunkStatus, utc_now
from core.storage import trigger_queue
from ingestion.deadletters import chunks_in_dead_letter
from ingestion.slots import all_slots_busy

log = logging.getLogger(__name__)
_SAVE_ATTEMPTS = 3
MAX_DEAD_LETTER_BYTES = 1 << 20  # Event Grid writes one event, or a few, a blob: a few KiB


@dataclass(frozen=True)
class SweepReport:
    swept_at: str
    runs_checked: int
    redriven: dict[str, list[int]]  # run id → the chunks queued for a redrive
    dead_letters_cleared: int
    dead_letters_unreadable: int
    left_for_next_sweep: int  # chunks that needed a redrive past SWEEP_MAX_REDRIVES

    @property
    def chunks_redriven(self) -> int:
        return sum(len(indexes) for indexes in self.redriven.values())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "chunks_redriven": self.chunks_redriven}


class _Redrives:
    """The redrives of one sweep: queued, counted against the bound, grouped by run."""

    def __init__(self, queue: QueueClient, bound: int) -> None:
        self._queue = queue
        self.remaining = bound
        self.by_run: dict[str, set[int]] = defaultdict(set)
        self.left = 0

    async def queue(self, refs: list[ChunkRef]) -> None:
        for ref in refs:
            await self._queue.send_message(ref.redrive_message())
            self.by_run[ref.run_id].add(ref.index)
        self.remaining -= len(refs)


async def sweep(ctx: Context, now: float | None = None) -> SweepReport:
    now = time.time() if now is None else now
    settings = ctx.settings
    queue = await trigger_queue(ctx.clients.queues, settings.storage, settings.redrive_queue)
    redrives = _Redrives(queue, settings.sweep_max_redrives)
    cleared, unreadable = await _sweep_dead_letters(ctx, redrives)
    runs = 0
    async for run_id in _run_ids(ctx):
        runs += 1
        due = await chunks_due(ctx, run_id, now)
        taken = due[: max(redrives.remaining, 0)]
        redrives.left += len(due) - len(taken)
        await redrives.queue(taken)
    report = SweepReport(
        swept_at=utc_now(), runs_checked=runs,
        redriven={run_id: sorted(indexes) for run_id, indexes in sorted(redrives.by_run.items())},
        dead_letters_cleared=cleared, dead_letters_unreadable=unreadable, left_for_next_sweep=redrives.left,
    )  # fmt: skip
    for run_id, indexes in report.redriven.items():
        with run_scope(run_id):
            log.info("sweep: redrive queued for run %s, chunks %s", run_id, indexes)
            await _log_in_run(ctx, run_id, report.swept_at, indexes)
    return report


async def chunks_due(ctx: Context, run_id: str, now: float) -> list[ChunkRef]:
    """The run's chunks that never started or stalled, SWEEP_STALE_SECONDS or more ago."""
    record = await ctx.runs.get(run_id)
    if record is None:
        return []
    statuses = {status.index: status for status in await ctx.runs.chunk_statuses(run_id)}
    if record.state == "chunked" and sum(s.state == "ingested" for s in statuses.values()) == record.chunks:
        return []  # finished: no need to list its chunks
    stale = ctx.settings.sweep_stale_seconds
    waiting_for_slots: bool | None = None
    due = []
    async for blob in ctx.chunk_container.list_blobs(name_starts_with=run_prefix(run_id)):
        try:
            ref = ChunkRef.parse(blob.name, ctx.chunk_container.container_name)
        except ChunkError:
            continue
        status = statuses.get(ref.index)
        if status is None:
            written = (blob.creation_time or blob.last_modified).timestamp()
            if now - written < stale:
                continue
            if waiting_for_slots is None:  # asked once a run, and only when it matters
                runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
                waiting_for_slots = bool(record.max_concurrency) and await all_slots_busy(
                    runs, run_id, record.max_concurrency, now
                )
            if not waiting_for_slots:
                due.append(ref)
        elif _stalled(status, now, stale):
            due.append(ref)
    return due


def _stalled(status: ChunkStatus, now: float, stale: float) -> bool:
    if status.state != "ingesting" or status.leased(now):
        return False
    try:
        updated = datetime.fromisoformat(status.updated_at).timestamp()
    except ValueError:
        return True  # no readable time: its lease ran out, which is what matters
    return now - updated >= stale


async def _run_ids(ctx: Context) -> AsyncIterator[str]:
    runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    async for item in runs.walk_blobs(delimiter="/"):
        run_id = item.name.removesuffix("/")
        if item.name.endswith("/") and is_run_id(run_id):
            yield run_id


async def _sweep_dead_letters(ctx: Context, redrives: _Redrives) -> tuple[int, int]:
    """Queues a redrive for each chunk in the dead-letter container; returns (blobs cleared, unreadable)."""
    container = ctx.clients.blobs.get_container_client(ctx.settings.deadletter_container)
    cleared = unreadable = 0
    try:
        async for blob in container.list_blobs():
            if redrives.remaining <= 0:
                redrives.left += 1
                break
            try:
                if blob.size > MAX_DEAD_LETTER_BYTES:
                    raise ValueError(f"{blob.size} bytes, more than a dead letter holds")
                data = await (await container.download_blob(blob.name)).readall()
                refs = chunks_in_dead_letter(data, ctx.settings.chunk_container)
            except ValueError as exc:
                unreadable += 1
                log.warning("sweep: dead-letter blob %s is %s; left in place", blob.name[:200], exc)
                continue
            if len(refs) > redrives.remaining:
                redrives.left += len(refs)
                break
            await redrives.queue(refs)
            await container.delete_blob(blob.name)
            cleared += 1
    except ResourceNotFoundError:
        pass  # no dead-letter container (as on Azurite until Event Grid writes one)
    return cleared, unreadable


async def _log_in_run(ctx: Context, run_id: str, swept_at: str, indexes: list[int]) -> None:
    """Adds the sweep to the run's sweep log (ETag-guarded against a concurrent sweep)."""
    for _ in range(_SAVE_ATTEMPTS):
        current, etag = await ctx.runs.sweep_log(run_id)
        updated = {
            "last_swept_at": swept_at,
            "last_redriven": indexes,
            "chunks_redriven": int(current.get("chunks_redriven", 0)) + len(indexes),
            "sweeps": int(current.get("sweeps", 0)) + 1,
        }
        try:
            await ctx.runs.save_sweep_log(run_id, updated, etag=etag)
            return
        except ClaimLostError:
            continue
    log.warning("sweep: could not record the sweep in run %s (other sweeps kept updating it)", run_id)


async def sweep_stalled_chunks(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.info("sweep: running late (the timer was past due)")
    report = await sweep(await app_context())
    log.info(
        "sweep: %d runs checked, %d chunks redriven, %d dead letters cleared, %d unreadable, %d left for next time",
        report.runs_checked, report.chunks_redriven, report.dead_letters_cleared, report.dead_letters_unreadable,
        report.left_for_next_sweep,
    )  # fmt: skip
