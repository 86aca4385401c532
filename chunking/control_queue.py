"""The control queue: where a run's chunking waits to be continued after a time budget."""

from __future__ import annotations

import contextlib
import json

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import TextBase64EncodePolicy

from fanout.context import Context
from fanout.runs import RunRecord

_created: set[tuple[object, str]] = set()


async def enqueue_continuation(ctx: Context, record: RunRecord) -> None:
    """`{"run_id", "resume"}`, base64-encoded as the Functions queue trigger expects by default."""
    name = ctx.settings.control_queue
    queue = ctx.clients.queues.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())
    if (ctx.settings.storage, name) not in _created:
        with contextlib.suppress(ResourceExistsError):
            await queue.create_queue()
        _created.add((ctx.settings.storage, name))
    await queue.send_message(json.dumps({"run_id": record.run_id, "resume": record.resume}))
