"""The control queue's trigger: chunking goes on, budget by budget, until the source is exhausted."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from chunking.run import write_chunks
from core.context import Context, app_context
from core.run_store import RunRecord

log = logging.getLogger(__name__)


async def continue_chunking(ctx: Context, body: bytes) -> RunRecord | None:
    """Carries a run's chunking on from a continuation; a stale or repeated one does nothing."""
    message = json.loads(body)
    record, etag = await ctx.runs.get_versioned(message["run_id"])
    if record is None or record.state != "chunking" or record.resume != message["resume"]:
        log.info("continuation for %s is stale: the run has moved on", message["run_id"])
        return None
    return await write_chunks(ctx, record, etag, ctx.settings.chunking_time_budget)


async def continue_chunking_message(msg: func.QueueMessage) -> None:
    await continue_chunking(await app_context(), msg.get_body())
