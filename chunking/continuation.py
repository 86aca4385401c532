"""The control queue's trigger: chunking goes on, budget by budget, until the source is exhausted."""

from __future__ import annotations

import logging
import time

import azure.functions as func

from chunking.chunker import chunk_onward
from core.context import Context, app_context
from core.contract import Continuation
from core.errors import ContractError, UpdateConflictError
from core.logs import did
from core.run_scope import run_scope
from core.run_store import RunRecord

log = logging.getLogger(__name__)


async def continue_chunking(ctx: Context, body: bytes) -> RunRecord | None:
    """Carries a run's chunking on from a continuation; a stale, repeated or malformed one does nothing, nor
    does one for a run another invocation is chunking."""
    try:
        continuation = Continuation.decode(body)
    except ContractError as exc:
        log.error("ignoring a control-queue message that is not a continuation: %s", exc)
        return None
    started = time.monotonic()
    with run_scope(continuation.run_id):  # every log line of the run carries its id
        versioned = await ctx.runs.get_versioned(continuation.run_id)
        if versioned is None or (versioned[0].state, versioned[0].resume) != ("chunking", continuation.resume):
            did(log, "continuation for %s is stale (the run has moved on): nothing done", continuation.run_id,
                seconds=time.monotonic() - started)  # fmt: skip
            return None
        record, etag = versioned
        try:
            record = await chunk_onward(ctx, record, etag, ctx.settings.chunking_time_budget)
        except UpdateConflictError as exc:  # a live chunker has it; if that one dies, the sweeper resumes the run
            did(log, "continuation for %s dropped: %s", continuation.run_id, exc, seconds=time.monotonic() - started)
            return None
        wrote = (record.chunks or 0) - (versioned[0].chunks or 0)
        then = "handed on" if record.state == "chunking" else record.state
        did(log, "run %s: %d chunks written, %d items in all, %s", record.run_id, wrote, record.messages or 0, then,
            seconds=time.monotonic() - started)  # fmt: skip
        return record


async def continue_chunking_message(msg: func.QueueMessage) -> None:
    await continue_chunking(await app_context(), msg.get_body())
