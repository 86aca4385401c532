"""The control queue's trigger: chunking goes on, budget by budget, until the source is exhausted."""

from __future__ import annotations

import logging

import azure.functions as func

from chunking.chunker import chunk_onward
from core.context import Context, app_context
from core.contract import Continuation
from core.errors import ClaimLostError, ContractError
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
    with run_scope(continuation.run_id):  # every log line of the run carries its id
        versioned = await ctx.runs.get_versioned(continuation.run_id)
        if versioned is None or (versioned[0].state, versioned[0].resume) != ("chunking", continuation.resume):
            log.info("continuation for %s is stale: the run has moved on", continuation.run_id)
            return None
        record, etag = versioned
        try:
            return await chunk_onward(ctx, record, etag, ctx.settings.chunking_time_budget)
        except ClaimLostError as exc:  # a live chunker has it; if that one dies, the sweeper resumes the run
            log.info("continuation for %s dropped: %s", continuation.run_id, exc)
            return None


async def continue_chunking_message(msg: func.QueueMessage) -> None:
    await continue_chunking(await app_context(), msg.get_body())
