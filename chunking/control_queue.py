"""The control queue: where a run's chunking waits to be continued after a time budget."""

from __future__ import annotations

from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueServiceClient

from core.contract import Continuation
from core.settings import StorageConfig
from core.storage import create_once


async def enqueue_continuation(
    queues: QueueServiceClient, storage: StorageConfig, name: str, continuation: Continuation
) -> None:
    """Base64-encoded, as the Functions queue trigger expects by default."""
    queue = queues.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())
    await create_once(storage, f"queue {name}", queue.create_queue)
    await queue.send_message(continuation.encode())
