"""Cancelling a run: chunking stops at its next page, every chunk at its next checkpoint; a redrive resumes it."""

from __future__ import annotations

from core.context import Context
from core.errors import RunConflictError, RunNotFoundError
from core.run_events import settle_run
from core.status import RunStatus, run_status


async def cancel_run(ctx: Context, run_id: str) -> RunStatus:
    """Cancels the run (a run cancelled already stays so); a run that completed or failed answers RunConflictError."""
    status = await run_status(ctx.runs, run_id, with_errors=False)
    if status is None:
        raise RunNotFoundError(f"no run {run_id!r}; start one with POST /api/ingestions", run_id=run_id)
    if status.state in ("completed", "failed"):
        raise RunConflictError(
            f"run {run_id!r} has {status.state} and cannot be cancelled; a redrive re-ingests its failed chunks",
            run_id=run_id, state=status.state,
        )  # fmt: skip
    stop = await ctx.runs.stop(run_id, "cancelled")
    if stop.reason != "cancelled":
        raise RunConflictError(f"run {run_id!r} has failed and cannot be cancelled", run_id=run_id, state="failed")
    settled = await settle_run(ctx, run_id)
    return settled or status
