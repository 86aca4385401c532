"""The control queue: where a run's chunking waits to be continued after a time budget."""

from __future__ import annotations

import json

from azure.storage.queue import TextBase64EncodePolicy

from core.context import Context
from core.run_store import RunRecord
from core.storage import create_once


async def enqueue_continuation(ctx: Context, record: RunRecord) -> None:
    """`{"run_id", "resume"}`, base64-encoded as the Functions queue trigger expects by default."""
    name = ctx.settings.control_queue
    queue = ctx.clients.queues.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())
    await create_once(ctx.settings.storage, f"queue {name}", queue.create_queue)
    await queue.send_message(json.dumps({"run_id": record.run_id, "resume": record.resume}))
