"""The target queue: encoding and TTL from settings, created once per process if missing."""

from __future__ import annotations

import contextlib

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from fanout.context import Context

_created: set[tuple[object, str]] = set()


async def target_queue(ctx: Context) -> QueueClient:
    settings = ctx.settings
    encoding = TextBase64EncodePolicy() if settings.message_encoding == "base64" else None
    queue = ctx.clients.queues.get_queue_client(settings.queue_name, message_encode_policy=encoding)
    key = (settings.storage, settings.queue_name)
    if key not in _created:
        with contextlib.suppress(ResourceExistsError):
            await queue.create_queue()
        _created.add(key)
    return queue
