"""The target queue(s): created once per process if missing, sent to by the lean sender.

With QUEUE_PARTITIONS=N a message goes to `{QUEUE_NAME}-{crc32(message) % N}`: the same ID always
lands in the same partition, in every process.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable

from core.context import Context
from core.storage import create_once, once_per_loop
from putmessage.connection_pool import ConnectionPool
from putmessage.sender import PutMessageSender

Send = Callable[[str], Awaitable[None]]


def partition_of(text: str, partitions: int) -> int:
    return zlib.crc32(text.encode("utf-8")) % partitions


async def ensure_queues(ctx: Context) -> None:
    for name in ctx.settings.queue_names:
        await create_once(ctx.settings.storage, f"queue {name}", ctx.clients.queues.get_queue_client(name).create_queue)


async def target_sender(ctx: Context) -> Send:
    """A function that sends one message to its target queue."""
    await ensure_queues(ctx)
    settings = ctx.settings
    queues = ctx.clients.queues
    pool = once_per_loop(
        ("put-message", settings.storage, queues.url),
        lambda: ConnectionPool(queues.url, settings.ingest_concurrency + 4, ctx.clients.tls, settings.storage.timeout),
    )
    senders = [
        PutMessageSender(
            pool,
            queues.get_queue_client(name),
            encoding=settings.message_encoding,
            ttl=settings.message_ttl,
            visibility_timeout=settings.message_visibility_timeout,
            retry=settings.storage.retry,
        )
        for name in settings.queue_names
    ]
    if len(senders) == 1:
        return senders[0].send
    partitioned = [sender.send for sender in senders]

    async def send(text: str) -> None:
        await partitioned[partition_of(text, len(partitioned))](text)

    return send


async def queue_length(ctx: Context) -> int:
    """Messages in the target queue(s) (exact on Azurite; approximate in Azure)."""
    total = 0
    for name in ctx.settings.queue_names:
        properties = await ctx.clients.queues.get_queue_client(name).get_queue_properties()
        total += properties.approximate_message_count or 0
    return total
