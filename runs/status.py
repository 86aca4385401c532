"""A run's status as `GET /api/ingestions/{run_id}` and `fanout status` show it (docs/http-api.md#status)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from core.context import Context
from core.contract import is_run_id
from core.errors import RunNotFoundError
from core.redact import public_text
from core.status import FINAL_STATES, RunStatus, run_status
from ingestion.backlog import look, read_samples, ttl_warning


def no_run(run_id: str) -> RunNotFoundError:
    """The one answer every run operation gives for a run id that names no run."""
    return RunNotFoundError(f"no run {run_id[:100]!r}", run_id=run_id[:100])


def checked_run_id(run_id: str) -> str:
    """The run id, when it can name a run (core/contract.py's rule): an operation reads no blob for another."""
    if not is_run_id(run_id):
        raise no_run(run_id)
    return run_id


async def get_status(ctx: Context, run_id: str) -> RunStatus:
    """The run's status, read now, with its failed chunks' errors and its messages by target queue; while
    chunks wait on its max_backlog, the target queues' counts and a warning if they would expire unread."""
    status = await run_status(ctx.runs, checked_run_id(run_id), ctx.settings.queue_targets)
    if status is None:
        raise no_run(run_id)
    if status.chunks.waiting and status.state not in FINAL_STATES:
        counts, warning = await _backlog(ctx, run_id, status.max_backlog)
        status = replace(status, backlog={"waiting_chunks": status.chunks.waiting, "queues": counts,
                                          "warning": warning})  # fmt: skip
    return status


async def _backlog(ctx: Context, run_id: str, limit: int) -> tuple[dict[str, int] | None, str | None]:
    """The target queues' counts and the TTL warning: advice only, so a queue that cannot be counted takes no
    status down (no counts, the reason as the warning)."""
    backlog, samples = await asyncio.gather(look(ctx, limit), read_samples(ctx, run_id), return_exceptions=True)
    if isinstance(backlog, BaseException):
        return None, f"the target queues could not be counted: {public_text(str(backlog), 200)}"
    return backlog.counts, ttl_warning(samples if isinstance(samples, list) else [], ctx.settings.message_ttl)
