"""The target queue(s): created once per process if missing, sent to by the lean sender.

The targets are every `QUEUE_NAME` partition in every `QUEUE_ACCOUNTS` account, account by account:
with A accounts and QUEUE_PARTITIONS=Q a message goes to target `crc32(message) % (A * Q)`, that is
account `t // Q`, queue `{QUEUE_NAME}-{t % Q}`. The same ID always lands in the same queue, in every
process, and with one account this is the same queue as `crc32 % Q` alone.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Sequence

from azure.storage.queue.aio import QueueClient, QueueServiceClient

from core.context import Context
from core.run_scope import count_retry
from core.settings import QueueAccount
from core.storage import create_once, forget_created, once_per_loop, queue_clients
from putmessage.connection_pool import ConnectionPool
from putmessage.pace import SendPace
from putmessage.sender import PutMessageSender

Send = Callable[[str, str | None], Awaitable[None]]  # (message, key: what routes it; None: the message)


def partition_of(text: str, partitions: int) -> int:
    return zlib.crc32(text.encode("utf-8")) % partitions


class Spread:
    """How many of messages[:sent] went to each target (empty with one target: `sent` says it all), counted
    on from the last call: a chunk's checkpoints ask with a growing `sent`, and each message is hashed once.
    `messages` are the keys the messages are routed by (a batch: its first item)."""

    def __init__(self, messages: Sequence[str], targets: int) -> None:
        self._messages = messages
        self._targets = targets
        self._counts = [0] * targets
        self._upto = 0

    def __call__(self, sent: int) -> tuple[int, ...]:
        if self._targets == 1:
            return ()
        if sent < self._upto:  # asked about fewer than before: count afresh
            self._counts, self._upto = [0] * self._targets, 0
        for text in self._messages[self._upto : sent]:
            self._counts[partition_of(text, self._targets)] += 1
        self._upto = max(self._upto, sent)
        return tuple(self._counts)


def _account_queues(ctx: Context, account: QueueAccount) -> QueueServiceClient:
    if account.storage == ctx.settings.storage:
        return ctx.clients.queues
    return queue_clients(account.storage, ctx.settings.put_pool_size).queues


def target_queues(ctx: Context) -> list[tuple[QueueAccount, QueueClient]]:
    """Every target queue with its account, in routing order."""
    names = ctx.settings.queue_names
    return [
        (account, queues.get_queue_client(name))
        for account in ctx.settings.queue_accounts
        for queues in [_account_queues(ctx, account)]
        for name in names
    ]


async def ensure_queues(ctx: Context) -> None:
    for account, queue in target_queues(ctx):
        await create_once(account.storage, f"queue {queue.queue_name}", queue.create_queue)


def forget_queues(ctx: Context) -> None:
    """After a send storage refused (a target queue deleted under the app, maybe): the next chunk creates them."""
    for account, queue in target_queues(ctx):
        forget_created(account.storage, f"queue {queue.queue_name}")


def _pool(ctx: Context, account: QueueAccount, queue: QueueClient) -> ConnectionPool:
    """One keep-alive pool per account endpoint and process, shared by every chunk sending to it."""
    settings = ctx.settings
    proxy = account.storage.network.proxies.for_url(queue.url)
    return once_per_loop(  # the pool takes only the scheme, host and port of the URL
        ("put-message", account.storage),
        lambda: ConnectionPool(queue.url, settings.put_pool_size, ctx.clients.tls, settings.storage.timeout, proxy),
    )


def _pace(ctx: Context, account: QueueAccount, queue: QueueClient) -> SendPace:
    """One per queue and process, shared by every chunk sending to it: a 503 slows them all. It allows at
    most what the account's connection pool holds (shared by the account's queues)."""
    most = ctx.settings.put_pool_size
    return once_per_loop(("put-message-pace", account.storage, queue.queue_name), lambda: SendPace(most))


async def target_sender(ctx: Context) -> Send:
    """A function that sends one message to its target queue."""
    await ensure_queues(ctx)
    settings = ctx.settings
    senders = [
        PutMessageSender(
            _pool(ctx, account, queue),
            queue,
            encoding=settings.message_encoding,
            ttl=settings.message_ttl,
            visibility_timeout=settings.message_visibility_timeout,
            retry=settings.storage.retry,
            pace=_pace(ctx, account, queue),
            on_retry=count_retry,  # into the chunk's run scope, for its metrics
            sas_lifetime=settings.sas_lifetime,
            user_agent=settings.user_agent,
        ).send
        for account, queue in target_queues(ctx)
    ]
    if len(senders) == 1:
        only = senders[0]

        async def send_one(text: str, key: str | None = None) -> None:
            await only(text)

        return send_one

    async def send(text: str, key: str | None = None) -> None:
        await senders[partition_of(text if key is None else key, len(senders))](text)

    return send


async def queue_length(ctx: Context) -> int:
    """Messages in the target queue(s) (exact on Azurite; approximate in Azure)."""
    return sum([(await queue.get_queue_properties()).approximate_message_count or 0 for _, queue in target_queues(ctx)])
