"""Fan-in: when a run settles (`completed`, `failed` or `cancelled`, nothing still sending), exactly one
event lands on RUN_EVENTS_QUEUE, however many invocations finish at the same moment.

Whoever notices first writes the run's completion mark (if-none-match: one writer wins) and sends
the event; when sending fails it takes the mark back and raises, so the invocation's retry sends it.
Every chunk outcome, the end of chunking and a cancel call `settle_run`; it also stops a run whose
failed chunks went past its tolerance, which the other chunks notice at their next checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, replace
from typing import Any

from core.context import Context
from core.run_store import utc_now
from core.status import RunStatus, run_status
from core.storage import trigger_queue

log = logging.getLogger(__name__)
EVENT_MAX_BYTES = 48 * 1024  # a queue message takes 64 KiB after base64 (which adds a third)
ERROR_CHARS = 300


def run_event(status: RunStatus, finished_at: str) -> dict[str, Any]:
    """The event: the run's id, final state, counts, timestamps and failed chunks, under EVENT_MAX_BYTES
    (a run with very many failed chunks lists their indexes only, then the first of them)."""
    failed = [{"index": chunk.index, "error": (chunk.error or "")[:ERROR_CHARS]} for chunk in status.failed_chunks]
    event: dict[str, Any] = {
        "run_id": status.run_id, "state": status.state, "chunks": asdict(status.chunks),
        "messages": asdict(status.messages), "error": status.error, "max_failed_chunks": status.max_failed_chunks,
        "created_at": status.created_at, "chunked_at": status.chunked_at, "completed_at": status.completed_at,
        "cancelled_at": status.cancelled_at, "finished_at": finished_at, "failed_chunks": failed,
        "failed_chunks_truncated": False,
    }  # fmt: skip
    if len(_encoded(event)) > EVENT_MAX_BYTES:
        event["failed_chunks"] = [{"index": chunk["index"]} for chunk in failed]
        event["failed_chunks_truncated"] = True
    while len(_encoded(event)) > EVENT_MAX_BYTES:
        event["failed_chunks"] = event["failed_chunks"][: len(event["failed_chunks"]) // 2]
    return event


def _encoded(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode("utf-8")


async def settle_run(ctx: Context, run_id: str) -> RunStatus | None:
    """Stops a run past its failure tolerance, and sends its completion event if it has settled and no one
    has sent it; returns its status as seen (None: no such run)."""
    status = await run_status(ctx.runs, run_id, with_errors=False)
    if status is None:
        return None
    if status.state == "failed" and status.tolerance_exceeded and status.cancelled_at is None:
        await ctx.runs.stop(run_id, "failed")
    if not status.settled or status.finished_at is not None:
        return status
    status = await run_status(ctx.runs, run_id)  # with the failed chunks' errors, for the event
    if status is None or not status.settled:
        return status
    event = run_event(status, utc_now())
    etag = await ctx.runs.mark_finished(run_id, _encoded(event))
    if etag is None:
        return status  # another invocation sent it
    try:
        queue = await trigger_queue(ctx.clients.queues, ctx.settings.storage, ctx.settings.run_events_queue)
        await queue.send_message(_encoded(event).decode("utf-8"))
    except BaseException:
        with contextlib.suppress(Exception):
            await ctx.runs.unmark_finished(run_id, etag)
        raise
    log.info("run %s %s: %d messages enqueued; event sent", run_id, status.state, status.messages.enqueued)
    return replace(status, finished_at=event["finished_at"])
