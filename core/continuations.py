"""The control queue (CONTROL_QUEUE): where a run's chunking waits to be carried on by `continue_chunking`.

A continuation names the run and where its chunking resumes; one that no longer matches the run's
record is dropped as stale, and one for a run another invocation is chunking is dropped too, so a
continuation sent twice (a hand-on, a redrive, a sweep) does the work once.
"""

from __future__ import annotations

from core.context import Context
from core.contract import Continuation, ResumePosition
from core.run_store import RunRecord
from core.storage import trigger_queue


async def send_continuation(ctx: Context, record: RunRecord) -> None:
    """Leaves the rest of the run's chunking, from its `resume` position, to a `continue_chunking` invocation."""
    control = await trigger_queue(ctx.clients.queues, ctx.settings.storage, ctx.settings.control_queue)
    await control.send_message(Continuation(record.run_id, record.resume or ResumePosition()).encode())
