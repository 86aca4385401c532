"""The sweeper: a timer (SWEEP_SCHEDULE) that moves every run nothing else would move; its rules are in
docs/operations.md#the-sweeper.

Invariants: a sweep queues at most SWEEP_MAX_REDRIVES redrives, round-robin across runs, and stops looking
at runs after SWEEP_TIME_BUDGET, in a random order, so no run waits for ever; a chunk or a chunker
that no redrive moves is failed with the reason after SWEEP_GIVE_UP_AFTER tries; a redrive queued twice
sends once (the chunk's claim); a run that cannot be read is skipped and counted, never the sweep's end.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

import azure.functions as func
from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient
from azure.storage.queue.aio import QueueClient

from core.context import Context, app_context
from core.continuations import send_continuation
from core.contract import ChunkRef, is_run_id, run_prefix
from core.errors import ChunkError, UpdateConflictError
from core.logs import did
from core.redact import public_text
from core.run_events import send_lost_event
from core.run_scope import run_scope
from core.run_store import ChunkStatus, RunRecord, RunStop, timestamp, utc_now
from core.status import derive_status
from core.storage import trigger_queue
from ingestion.slots import all_slots_busy
from runs.deadletters import chunks_in_dead_letter, events_of_chunks

log = logging.getLogger(__name__)
_SAVE_ATTEMPTS = 3
MAX_DEAD_LETTER_BYTES = 1 << 20  # Event Grid writes one event, or a few, a blob: a few KiB


@dataclass(frozen=True)
class SweepReport:
    swept_at: str
    runs_checked: int
    runs_unreadable: int  # skipped: a record or chunk status that could not be read (in the log)
    runs_left: int  # not looked at: the sweep's time budget ran out
    redriven: dict[str, list[int]]  # run id → the chunks queued for a redrive
    failed: dict[str, list[int]]  # run id → the chunks marked failed after SWEEP_GIVE_UP_AFTER
    dead_letters_cleared: int
    dead_letters_unreadable: int
    left_for_next_sweep: int  # chunks that needed a redrive past SWEEP_MAX_REDRIVES
    events_sent: list[str]  # runs whose completion event this sweep sent (its sender had died)
    chunking_resumed: list[str]  # runs whose chunker had died: a continuation carries their chunking on

    @property
    def chunks_redriven(self) -> int:
        return sum(len(indexes) for indexes in self.redriven.values())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "chunks_redriven": self.chunks_redriven}


@dataclass(frozen=True)
class Due:
    """A chunk that needs a redrive, with its status (None: it never started)."""

    ref: ChunkRef
    status: ChunkStatus | None

    @property
    def sent(self) -> int:
        return self.status.sent if self.status else 0


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
    deadline = time.monotonic() + ctx.settings.sweep_time_budget
    settings = ctx.settings
    queue = await trigger_queue(ctx.clients.queues, settings.storage, settings.redrive_queue)
    redrives = _Redrives(queue, settings.sweep_max_redrives)
    cleared, unreadable = await _sweep_dead_letters(ctx, redrives)
    due_by_run: dict[str, list[Due]] = {}
    events_sent: list[str] = []
    chunking_resumed: list[str] = []
    checked = unreadable_runs = left_runs = 0
    run_ids = [run_id async for run_id in _run_ids(ctx)]
    random.shuffle(run_ids)  # when a sweep's time runs out, the next looks at others first: none is left for ever
    for run_id in run_ids:
        if time.monotonic() > deadline:
            left_runs += 1
            continue
        checked += 1
        try:
            seen = await look_at_run(ctx, run_id, now)
        except Exception as exc:  # one unreadable run must not stop the sweep of every other
            unreadable_runs += 1
            with run_scope(run_id):
                log.warning("sweep: run %s skipped, its records cannot be read: %s: %s", run_id,
                            type(exc).__name__, public_text(str(exc), 300))  # fmt: skip
            continue
        if seen.due:
            due_by_run[run_id] = seen.due
        elif seen.quiet and await _send_lost_event(ctx, run_id, now, deadline):
            events_sent.append(run_id)
        if seen.stranded and await _resume_chunking(ctx, run_id):
            chunking_resumed.append(run_id)
    taken = _round_robin(due_by_run, max(redrives.remaining, 0))
    redrives.left += sum(len(due) for due in due_by_run.values()) - sum(len(due) for due in taken.values())
    failed: dict[str, list[int]] = {}
    swept_at = utc_now()
    for run_id, chunks in taken.items():
        with run_scope(run_id):
            to_redrive, to_fail = await _count_redrives(ctx, run_id, swept_at, chunks)
            failed_here = [due.ref.index for due in to_fail if await _mark_failed(ctx, due)]
            if failed_here:
                failed[run_id] = failed_here
            await redrives.queue([due.ref for due in to_redrive])
    report = SweepReport(
        swept_at=swept_at, runs_checked=checked, runs_unreadable=unreadable_runs, runs_left=left_runs,
        redriven={run_id: sorted(indexes) for run_id, indexes in sorted(redrives.by_run.items())}, failed=failed,
        dead_letters_cleared=cleared, dead_letters_unreadable=unreadable, left_for_next_sweep=redrives.left,
        events_sent=events_sent, chunking_resumed=chunking_resumed,
    )  # fmt: skip
    for run_id, indexes in report.redriven.items():
        with run_scope(run_id):
            log.info("sweep: redrive queued for run %s, chunks %s", run_id, indexes)
    return report


async def _send_lost_event(ctx: Context, run_id: str, now: float, deadline: float) -> bool:
    """A webhook delivery ends by the sweep's `deadline`: a sweep never outlasts SWEEP_TIME_BUDGET by one."""
    try:
        return await send_lost_event(ctx, run_id, now, deadline)
    except Exception as exc:  # the next sweep tries again; the other runs are swept meanwhile
        with run_scope(run_id):
            log.warning("sweep: run %s: its completion event could not be sent: %s: %s", run_id,
                        type(exc).__name__, public_text(str(exc), 300))  # fmt: skip
        return False


async def _resume_chunking(ctx: Context, run_id: str) -> bool:
    """Sends a continuation for a run whose chunking nobody carries on (its chunker died: a killed HTTP call,
    a lost instance); a continuation that is only late finds the run claimed, or moved on, and does nothing.
    A run resumed SWEEP_GIVE_UP_AFTER times without taking another item fails instead, with the reason: a
    redrive by hand carries it on once the cause is fixed. True when it was resumed."""
    versioned = await ctx.runs.get_versioned(run_id)
    if versioned is None or versioned[0].state != "chunking" or versioned[0].leased(time.time()):
        return False  # moved on, or claimed after all (a sweep's clock may run ahead; claims keep real time)
    record, etag = versioned
    with run_scope(run_id):
        try:
            sweeps, sweeps_etag = await ctx.runs.sweep_log(run_id)
            before = sweeps.get("chunking_resumes") or {}
            resumes = int(before.get("resumes", 0)) + 1 if before.get("messages") == record.messages else 1
            if resumes > ctx.settings.sweep_give_up_after:
                reason = (
                    f"the sweeper resumed this run's chunking {ctx.settings.sweep_give_up_after} times and it "
                    f"never got past item {record.messages or 0}: look for the error in continue_chunking's log, "
                    "fix it, then redrive the run"
                )
                await ctx.runs.save(record.failed(reason, record.chunks or 0, record.messages or 0), if_match=etag)
                log.error("sweep: run %s failed: %s", run_id, reason)
                return False
            await send_continuation(ctx, record)  # counted once sent: a send that fails is not a try
            resumed = {"resumes": resumes, "messages": record.messages}
            await ctx.runs.save_sweep_log(run_id, {**sweeps, "chunking_resumes": resumed}, etag=sweeps_etag)
        except Exception as exc:  # moved meanwhile, or storage failed: the next sweep looks again
            log.warning("sweep: run %s: its chunking could not be resumed: %s: %s", run_id, type(exc).__name__,
                        public_text(str(exc), 300))  # fmt: skip
            return False
        log.warning("sweep: run %s was left chunking by an invocation that died; a continuation carries it on", run_id)
    return True


def _round_robin(due_by_run: dict[str, list[Due]], budget: int) -> dict[str, list[Due]]:
    """Up to `budget` chunks, one of each run in turn: an old run with many stalls starves no other."""
    taken: dict[str, list[Due]] = defaultdict(list)
    depth = 0
    while budget > 0 and any(len(due) > depth for due in due_by_run.values()):
        for run_id, due in due_by_run.items():
            if budget > 0 and len(due) > depth:
                taken[run_id].append(due[depth])
                budget -= 1
        depth += 1
    return dict(taken)


@dataclass(frozen=True)
class RunSeen:
    """What a sweep makes of a run: its chunks to redrive, whether its chunking is stranded, and whether
    its completion event is due."""

    due: list[Due]
    stranded: bool = False  # `chunking`, not stopped, no live claim, unmoved for SWEEP_STALE_SECONDS
    quiet: bool = False  # settled, and nothing of it changed for SWEEP_STALE_SECONDS


async def look_at_run(ctx: Context, run_id: str, now: float) -> RunSeen:
    """Its chunks that never started, stalled, or that its record counts but storage lost, SWEEP_STALE_SECONDS
    or more ago (unless every one of its `max_concurrency` slots is taken: they wait their turn); and
    whether its chunking was left by a chunker that died."""
    record = await ctx.runs.get(run_id)
    if record is None:
        return RunSeen([])  # purged
    stop = await ctx.runs.stop_of(run_id)
    statuses = {status.index: status for status in await ctx.runs.chunk_statuses(run_id)}
    stale = ctx.settings.sweep_stale_seconds
    status = derive_status(record, list(statuses.values()), stop, now=now)
    if status.settled:
        return RunSeen([], quiet=now - _last_change(record, statuses.values(), stop) >= stale)
    stale_stop = stop is not None and stop.reason == "failed" and not status.tolerance_exceeded
    if stale_stop and await ctx.runs.lift_failed_stop(run_id):
        # A chunk's settle wrote it from a status that a redrive has changed since: the run goes on.
        log.warning("sweep: run %s: a stop for failed chunks that a redrive had reopened is lifted", run_id)
        stop = None
    if stop is not None:
        return RunSeen([])  # stopped (cancelled, failed past its tolerance): a redrive by hand resumes it
    recorded_long_ago = now - timestamp(record.updated_at or record.created_at) >= stale
    stranded = record.state == "chunking" and not record.leased(now) and recorded_long_ago
    # Stalled, and `stopped` ones too (stopped after a redrive lifted the run's stop), listed or not: the
    # redrive of one whose blob is gone marks it failed, saying so. Each redrive names the run's generation.
    generation = record.generation
    # A chunk waiting on its run's max_backlog comes back by itself every BACKLOG_RETRY_SECONDS: stalled only
    # when it has not for that long past `stale`.
    waits = stale + ctx.settings.backlog_retry_seconds
    stalled = [
        (index, chunk)
        for index, chunk in sorted(statuses.items())
        if chunk.stalled(now, waits if chunk.waits_on_backlog else stale)
    ]
    due = [Due(ChunkRef(run_id, index, generation), chunk) for index, chunk in stalled]
    listed = set()
    async for blob in ctx.chunk_container.list_blobs(name_starts_with=run_prefix(run_id)):
        try:
            ref = ChunkRef.parse(blob.name, ctx.chunk_container.container_name)
        except ChunkError:
            continue
        listed.add(ref.index)
        written = (blob.creation_time or blob.last_modified).timestamp()
        if ref.index not in statuses and now - written >= stale:  # written, never started
            due.append(Due(replace(ref, generation=generation), None))
    if recorded_long_ago:  # counted by the record, but neither there nor started: a redrive marks them failed
        lost = set(range(record.chunks or 0)) - listed - set(statuses)
        due += [Due(ChunkRef(run_id, index, generation), None) for index in sorted(lost)]
    if due and record.max_concurrency:  # asked once a run, and only when it matters
        runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
        if await all_slots_busy(runs, run_id, record.max_concurrency, now):
            return RunSeen([], stranded)
    return RunSeen(due, stranded)


def _last_change(record: RunRecord, statuses: Iterable[ChunkStatus], stop: RunStop | None) -> float:
    times = [record.created_at, record.updated_at, record.chunked_at or "", stop.at if stop else ""]
    times += [status.updated_at for status in statuses]
    return max((timestamp(at) for at in times), default=0.0)


async def _count_redrives(ctx: Context, run_id: str, swept_at: str, chunks: list[Due]) -> tuple[list[Due], list[Due]]:
    """Adds the sweep to the run's sweep log (ETag-guarded against a concurrent sweep): the chunks it
    redrives, each one's count of redrives without progress (a chunk waiting on its backlog has none: it is
    held up by design). Returns (to redrive, to mark failed)."""
    for _ in range(_SAVE_ATTEMPTS):
        current, etag = await ctx.runs.sweep_log(run_id)
        counts: dict[str, Any] = dict(current.get("redrives_by_chunk") or {})
        to_redrive, to_fail = [], []
        for due in chunks:
            key = str(due.ref.index)
            if due.status is not None and due.status.waits_on_backlog:  # its sender came and found the backlog
                to_redrive.append(due)  # full: the consumer holds it up, no storage error; never failed for it
                counts.pop(key, None)
                continue
            before = counts.get(key) or {}
            redrives = int(before.get("redrives", 0)) + 1 if int(before.get("sent", -1)) == due.sent else 1
            if redrives > ctx.settings.sweep_give_up_after:
                to_fail.append(due)
                counts.pop(key, None)  # a redrive by hand starts the count afresh
            else:
                to_redrive.append(due)
                counts[key] = {"redrives": redrives, "sent": due.sent}
        indexes = sorted(due.ref.index for due in to_redrive)
        updated = {
            **current, "last_swept_at": swept_at, "last_redriven": indexes,
            "chunks_redriven": int(current.get("chunks_redriven", 0)) + len(indexes),
            "sweeps": int(current.get("sweeps", 0)) + 1, "redrives_by_chunk": counts,
        }  # fmt: skip
        try:
            await ctx.runs.save_sweep_log(run_id, updated, etag=etag)
            return to_redrive, to_fail
        except UpdateConflictError:
            continue
    log.warning("sweep: could not record the sweep in run %s (other sweeps kept updating it)", run_id)
    return [], []  # the next sweep tries again


async def _mark_failed(ctx: Context, due: Due) -> bool:
    """Marks the chunk failed (ETag-guarded: False when it moved on meanwhile), with what to do."""
    reason = (
        f"the sweeper redrove this chunk {ctx.settings.sweep_give_up_after} times and it never got past message "
        f"{due.sent}: look for the storage error in the chunk's log lines (a 403, a deleted queue), fix it, then "
        "redrive the run"
    )
    status = due.status or ChunkStatus(due.ref.index, "failed", sent=0, count=0, updated_at="")
    failed = replace(status, state="failed", error=reason, owner=None, lease_until=0.0, updated_at=utc_now())
    try:
        await ctx.runs.put_chunk_status(due.ref, failed, expected=due.status)
    except UpdateConflictError:
        return False
    log.error("sweep: chunk %s marked failed: %s", due.ref.blob_name, reason)
    return True


async def _run_ids(ctx: Context) -> AsyncIterator[str]:
    runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    async for item in runs.walk_blobs(delimiter="/"):
        run_id = item.name.removesuffix("/")
        if item.name.endswith("/") and is_run_id(run_id):
            yield run_id


async def _sweep_dead_letters(ctx: Context, redrives: _Redrives) -> tuple[int, int]:
    """Queues a redrive for each chunk in the dead-letter container; returns (blobs cleared, unreadable).
    A blob naming more chunks than the sweep has room for has a prefix queued and is rewritten with the rest."""
    container = ctx.clients.blobs.get_container_client(ctx.settings.deadletter_container)
    cleared = unreadable = 0
    try:
        async for blob in container.list_blobs():
            try:
                if blob.size > MAX_DEAD_LETTER_BYTES:
                    raise ValueError(f"{blob.size} bytes, more than a dead letter holds")
                download = await container.download_blob(blob.name)
                data = await download.readall()
                refs = chunks_in_dead_letter(data, ctx.settings.chunk_container)
            except ValueError as exc:
                unreadable += 1
                log.warning("sweep: dead-letter blob %s is %s; left in place", blob.name[:200], exc)
                continue
            room = max(redrives.remaining, 0)
            if len(refs) > room:
                redrives.left += len(refs) - room
                rest = events_of_chunks(data, ctx.settings.chunk_container, refs[room:])
                if room and await _keep_only(container, blob.name, rest, str(download.properties.etag)):
                    await redrives.queue(refs[:room])
                continue
            await redrives.queue(refs)
            await container.delete_blob(blob.name)
            cleared += 1
    except ResourceNotFoundError:
        pass  # no dead-letter container (as on Azurite until Event Grid writes one)
    return cleared, unreadable


async def _keep_only(container: ContainerClient, name: str, events: list[dict[str, Any]], etag: str) -> bool:
    """Rewrites the dead-letter blob with `events` only (ETag-guarded: False when it changed meanwhile)."""
    try:
        await container.get_blob_client(name).upload_blob(
            json.dumps(events).encode(), overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified
        )
    except (ResourceModifiedError, ResourceNotFoundError):
        return False
    return True


async def sweep_stalled_chunks(timer: func.TimerRequest) -> None:
    started = time.monotonic()
    report = await sweep(await app_context())
    did(
        log, "sweep%s: %d runs checked (%d unreadable, %d left for next time), %d chunks redriven, %d marked failed, "
        "%d dead letters cleared, %d unreadable, %d chunks left for next time, %d lost completion events sent, "
        "%d stranded runs' chunking resumed", " (late: the timer was past due)" if timer.past_due else "",
        report.runs_checked, report.runs_unreadable, report.runs_left, report.chunks_redriven,
        sum(len(indexes) for indexes in report.failed.values()), report.dead_letters_cleared,
        report.dead_letters_unreadable, report.left_for_next_sweep, len(report.events_sent),
        len(report.chunking_resumed), seconds=time.monotonic() - started,
    )  # fmt: skip
