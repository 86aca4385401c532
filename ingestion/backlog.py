"""Back-pressure: a run's `max_backlog` holds its chunks while a target queue holds more messages than that.

A chunk looks when it starts and at each checkpoint; over the bound it saves its checkpoint, lets its claim
go and comes back later (ingestion/invocation.py: the redrive queue, hidden BACKLOG_RETRY_SECONDS; `fanout
run` waits in-process), its status `waiting: backlog`, so the sweeper leaves it. Nothing is lost or sent
twice by the pause: it is a checkpoint and a resume from it. Each look over the bound is kept, and the look
of a chunk back from waiting (`{run_id}/backlog.json`, the last few), so a status can tell the consumer's
drain rate and warn when the backlog would outlive the messages' time-to-live.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from dataclasses import dataclass

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue.aio import QueueClient

from core.context import Context
from core.contract import SERVICE_DEFAULT_TTL, backlog_blob
from ingestion.target import target_queues

log = logging.getLogger(__name__)
_SAMPLES = 20  # looks kept per run


@dataclass(frozen=True)
class Backlog:
    """What a look at the target queues found."""

    counts: dict[str, int]  # messages by target queue (`account/queue` as statuses name them)
    limit: int

    @property
    def over(self) -> bool:
        return any(count > self.limit for count in self.counts.values())


async def look(ctx: Context, limit: int) -> Backlog:
    """The target queues' approximate message counts, against the run's `limit` (a queue not made yet holds
    none: the sender makes it at its first send)."""
    counts = await asyncio.gather(*(_count(queue) for _, queue in target_queues(ctx)))
    return Backlog(dict(zip(ctx.settings.queue_targets, counts, strict=True)), limit)


async def _count(queue: QueueClient) -> int:
    try:
        properties = await queue.get_queue_properties()
    except ResourceNotFoundError:
        return 0
    return properties.approximate_message_count or 0


async def keep_sample(ctx: Context, run_id: str, backlog: Backlog) -> None:
    """Adds this look to the run's samples (last writer wins: a lost sample only blurs the rate)."""
    blob = ctx.clients.blobs.get_container_client(ctx.settings.runs_container).get_blob_client(backlog_blob(run_id))
    samples = await read_samples(ctx, run_id)
    samples = [*samples, (round(time.time(), 3), sum(backlog.counts.values()))][-_SAMPLES:]
    with contextlib.suppress(Exception):  # a sample is advice: failing to keep one changes no outcome
        await blob.upload_blob(json.dumps({"samples": samples}), overwrite=True)
    warning = ttl_warning(samples, ctx.settings.message_ttl)
    if warning:
        log.warning("run %s waits on its max_backlog (%d): %s", run_id, backlog.limit, warning)


async def read_samples(ctx: Context, run_id: str) -> list[tuple[float, int]]:
    blob = ctx.clients.blobs.get_container_client(ctx.settings.runs_container).get_blob_client(backlog_blob(run_id))
    try:
        value = json.loads(await (await blob.download_blob()).readall())
        return [(float(at), int(count)) for at, count in value["samples"]][-_SAMPLES:]
    except (ResourceNotFoundError, ValueError, KeyError, TypeError):
        return []


def ttl_warning(samples: list[tuple[float, int]], ttl: int | None) -> str | None:
    """Why the waiting messages may expire unread, from the consumer's drain rate: what the looks saw leave
    the queues (each fall from one look to the next; the run's own sends between looks only hide some) over
    the time between those looks (a span in which the queue grew says nothing of the consumer); None when they
    drain in time (or never expire, or there is too little to tell)."""
    lifetime = SERVICE_DEFAULT_TTL if ttl is None else ttl
    if lifetime == -1 or len(samples) < 2:
        return None
    (first_at, _), (last_at, last) = samples[0], samples[-1]
    if last_at - first_at < 1:
        return None
    pairs = itertools.pairwise(samples)
    falls = [(before - after, at - since) for (since, before), (at, after) in pairs if after < before]
    drained, watched = sum(fall for fall, _ in falls), sum(span for _, span in falls)
    rate = drained / max(watched, 1.0)
    if rate <= 0:
        return (
            f"the target queues hold {last} messages and did not drain over {last_at - first_at:.0f} s: messages "
            f"older than QUEUE_MESSAGE_TTL ({lifetime} s) are deleted unread"
        )
    if last / rate > lifetime:
        return (
            f"at the consumer's drain rate of {rate:.1f} messages/s the backlog of {last} takes {last / rate:.0f} s, "
            f"past QUEUE_MESSAGE_TTL ({lifetime} s): messages would be deleted unread"
        )
    return None
