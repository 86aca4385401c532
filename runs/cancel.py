"""Cancelling a run: chunking stops at its next page, every chunk at its next checkpoint; a redrive resumes it."""

from __future__ import annotations

import logging
import time

from core.context import Context
from core.errors import RunConflictError
from core.logs import did
from core.run_events import settle_run
from core.run_scope import run_scope
from core.status import RunStatus, run_status
from runs.status import checked_run_id, no_run

log = logging.getLogger(__name__)


async def cancel_run(ctx: Context, run_id: str) -> RunStatus:
    """Cancels the run (a run cancelled already stays so); a run that completed or failed answers RunConflictError."""
    started = time.monotonic()
    with run_scope(checked_run_id(run_id)):
        status = await _cancel(ctx, run_id)
        did(log, "run %s cancelled: %s", run_id, status.state, seconds=time.monotonic() - started)
    return status


async def _cancel(ctx: Context, run_id: str) -> RunStatus:
    status = await run_status(ctx.runs, run_id, with_errors=False)
    if status is None:
        raise no_run(run_id)
    if status.state in ("completed", "failed"):
        raise RunConflictError(
            f"run {run_id!r} has {status.state} and cannot be cancelled; a redrive re-ingests its failed chunks",
            run_id=run_id, state=status.state,
        )  # fmt: skip
    stop, written = await ctx.runs.stop(run_id, "cancelled")
    current = await ctx.runs.get(run_id)
    if current is None or current.created_at != status.created_at:  # purged meanwhile (a new run, maybe)
        if written is not None:  # the stop this cancel wrote is not a new run's to bear; one it found stays
            await ctx.runs.lift_stop_written(run_id, written)
        raise no_run(run_id)
    if stop.reason != "cancelled":
        raise RunConflictError(f"run {run_id!r} has failed and cannot be cancelled", run_id=run_id, state="failed")
    return (await settle_run(ctx, run_id)).status or status
