"""`python -m fanout demo`: the whole pipeline on this machine, checked from the queue side.

It starts one Azurite per storage account (`QUEUE_ACCOUNTS` over setting names holding their
connection strings) and the demo API, runs the pipeline with chunks ingested in parallel, and drains
every target queue while it runs (`fanout.consumer`), so no Azurite ever holds more than a window:
an Azurite's Put Message slows with every message it holds, and a million held would take hours.
The check decodes every message received back to its ID; the sender's own counters are not used.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from chunking.request import IngestionRequest, parse_ingestion_request
from core.context import Context, app_context
from core.settings import QueueAccount, Settings
from core.status import RunStatus
from core.storage import close_storage_clients, once_per_loop
from fanout.azurite import start_azurite
from fanout.consumer import BATCH, QueueDrain, Tally
from fanout.demo_api import DemoApi
from ingestion.target import ensure_queues, queue_length, target_queues
from putmessage.connection_pool import ConnectionPool
from runs.local import Progress, run_here

RECEIVERS = 4  # receive loops per queue, each with up to BATCH deletes in flight
# Puts in flight per chunk: well below the consumers' deletes in flight, so that Azurite (which answers
# requests in turn) removes messages as fast as it takes them and holds no more than a window.
SEND_WINDOW = "16"
QUEUE_GC_MS = 1000  # Azurite's queue clean-up every second, not every minute (fanout/azurite_queue_gc.js)
ACCOUNT_SETTING = "FANOUT_DEMO_ACCOUNT_{}"  # the connection setting of the demo's k-th extra account


@dataclass(frozen=True)
class Verification:
    """What the consumers received, against the IDs the source served."""

    ids: int
    received: int
    missing: int
    duplicates: int
    foreign: int  # items (or messages) that are no ID the source served
    misplaced: int  # items whose envelope `seq` is not their place in the source
    duplicate_bound: int  # chunks x (INGEST_CHECKPOINT_EVERY + INGEST_CONCURRENCY) messages' IDs, or the chunk
    left_in_queues: int
    messages: int  # queue messages received: IDs / batch_max_items at the least

    @property
    def passed(self) -> bool:
        return (
            self.missing == 0
            and self.foreign == 0
            and self.misplaced == 0
            and self.duplicates <= self.duplicate_bound
            and self.left_in_queues == 0
        )


@contextmanager
def demo_environment(count: int, accounts: int, base: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """`accounts` Azurites and a demo API serving `count` IDs; the environment that points at them."""
    with ExitStack() as stack:
        azurites = [start_azurite(queue_gc_ms=QUEUE_GC_MS) for _ in range(accounts)]
        for azurite in azurites:
            stack.callback(azurite.close)
        api = DemoApi(count=count).start()
        stack.callback(api.stop)
        env = {key: value for key, value in base.items() if not key.startswith("AzureWebJobsStorage__")}
        env |= {"AzureWebJobsStorage": azurites[0].connection_string, "SOURCE_URL": api.url}
        env.setdefault("INGEST_CONCURRENCY", SEND_WINDOW)
        extra = {ACCOUNT_SETTING.format(k): azurite.connection_string for k, azurite in enumerate(azurites[1:], 1)}
        env |= extra | {"QUEUE_ACCOUNTS": ",".join(["AzureWebJobsStorage", *extra])}
        yield env


Outcome = tuple[RunStatus, float, Verification]  # the run's status, seconds to the last message drained, the check


def run_demo(
    count: int, accounts: int, parallel: int, progress: Progress | None, fields: Mapping[str, object] | None = None
) -> Outcome:
    """The demo run, its request's `fields` (the message shape, say) as `POST /api/ingestions` takes them."""
    with demo_environment(count, accounts, os.environ) as env:
        settings = Settings.from_env(env)
        given = {name: value for name, value in (fields or {}).items() if value is not None}
        request = parse_ingestion_request(json.dumps(given).encode(), settings)
        return asyncio.run(_run_and_drain(settings, request, count, parallel, progress))


async def _run_and_drain(
    settings: Settings, request: IngestionRequest, count: int, parallel: int, progress: Progress | None
) -> Outcome:
    started = time.monotonic()
    try:
        ctx = await app_context(settings)
        await ensure_queues(ctx)
        tally = Tally(count, request.delivery)
        finishing = asyncio.Event()
        drains = [QueueDrain(queue, _drain_pool(ctx, account, queue.url), tally, RECEIVERS) for account, queue in
                  target_queues(ctx)]  # fmt: skip

        async def run_then_finish() -> RunStatus:
            try:
                return await run_here(ctx, request, progress, parallel=parallel)
            finally:
                finishing.set()

        # The first error (the run's or a consumer's) is raised as it is; asyncio.run cancels the rest.
        run = asyncio.ensure_future(run_then_finish())
        await asyncio.gather(run, *(drain.drain(finishing) for drain in drains))
        status = run.result()
        seconds = time.monotonic() - started
        left = await queue_length(ctx)
    finally:
        await close_storage_clients()
    # One interruption a chunk re-sends at most this many messages' IDs, and never more than the chunk holds
    resent = (settings.checkpoint_every + settings.ingest_concurrency) * request.delivery.batch_max_items
    bound = (status.chunks.total or 0) * min(resent, request.chunk_size)
    verification = Verification(
        count, tally.items, tally.missing, tally.duplicates, tally.foreign, tally.misplaced,
        bound, left, tally.received,
    )  # fmt: skip
    return status, seconds, verification


def _drain_pool(ctx: Context, account: QueueAccount, url: str) -> ConnectionPool:
    """The consumers' connections to one account, apart from the sender's."""
    size = RECEIVERS * (BATCH + 1) * len(ctx.settings.queue_names)
    return once_per_loop(
        ("demo-drain", account.storage),
        lambda: ConnectionPool(url, size, ctx.clients.tls, ctx.settings.storage.timeout),
    )
