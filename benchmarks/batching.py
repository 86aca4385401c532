"""Batches under the Azure model: the whole pipeline (the source read, chunk blobs, run and chunk status,
Put Message) into one queue held at its limit, at `batch_max_items` 1, 10, 100 and the most that fit.

    .venv/bin/python -m benchmarks.batching [--messages 2000] [--scale 10] [--chunk-size N] [--parallel 8] [--json]

Each case reads `--messages` x batch_max_items IDs (at the most 1,000,000) from the demo API, so that each
sends about as many queue messages, and runs `fanout run`'s path in this process (runs/local.py) against
one Azurite behind the Azure model (testkit/azure_model.py) slowed `--scale` times, `--parallel` chunks
ingested at once (as parallel blob-trigger invocations are): a queue takes 2,000 /
scale Put Messages a second, at 6 ms x scale median latency. "Queue IDs/s" is what the queue carried
while the run sent (the model's stored messages between the 10th and 90th percentile, times the IDs a
message), "run IDs/s" the whole run's, chunking and start-up included. The model counts every storage
request that passes it (blob, queue; the run store is blobs too), so "requests per 1M IDs" is what Azure
bills as storage transactions, 503s included. Printed as ratios to the unbatched case of the same run;
rates in model time (times the scale: Azure's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from typing import Any

from benchmarks.azure_model import RETRIES, fresh_azurite, models, steady_rate
from chunking.request import IngestionRequest, default_chunk_size
from core.context import app_context
from core.settings import CHUNK_SIZE, Settings
from core.storage import close_storage_clients
from fanout.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from fanout.demo_api import DemoApi
from runs.local import run_here
from testkit.azure_model import ModelConfig

MOST = 5000  # the field's ceiling: the 64 KiB limit cuts a batch of UUIDs well before it (at 1,260)
MOST_IDS = 1_000_000


def case(azurite: Azurite, config: ModelConfig, ids: int, items: int, chunk_size: int, parallel: int) -> dict[str, Any]:
    """One run of `ids` IDs at `items` a message; what it took, as the model counted it."""
    api = DemoApi(count=ids).start()
    source = api.url
    with models(azurite, config) as (model,):
        env = {**RETRIES, "AzureWebJobsStorage": model.connection_string(ACCOUNT, ACCOUNT_KEY), "SOURCE_URL": source,
               "QUEUE_NAME": f"batch-{secrets.token_hex(4)}"}  # fmt: skip
        request = IngestionRequest("default", chunk_size, f"batch-{items}-{secrets.token_hex(3)}",
                                   batch_max_items=items)  # fmt: skip

        async def run() -> Any:
            try:
                return await run_here(await app_context(Settings.from_env(env)), request, parallel=parallel)
            finally:
                await close_storage_clients()

        model.stats.clear()
        model.stored_at.clear()
        started = time.monotonic()
        try:
            status = asyncio.run(run())
        finally:
            api.stop()
        seconds = time.monotonic() - started
        requests, puts = model.stats["requests"], model.stats["put_messages"]
        steady = steady_rate(sorted(model.stored_at))
    assert status.state == "completed" and status.messages.enqueued == ids, status
    per_message = ids / status.messages.queue_messages
    return {
        "batch_max_items": items, "ids": ids, "queue_messages": status.messages.queue_messages,
        "items_per_message": per_message, "seconds": seconds, "ids_per_second": ids / seconds,
        "queue_messages_per_second": steady, "queue_ids_per_second": steady * per_message,
        "requests": requests, "put_message_requests": puts, "other_requests": requests - puts,
        "requests_per_million_ids": requests / ids * 1e6, "throttled": model.stats["throttled_queue"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="queue messages a case sends, about")
    parser.add_argument("--scale", type=float, default=10.0, help="Azure slowed this many times (default 10)")
    parser.add_argument("--chunk-size", type=int, help="IDs a chunk (default: the app's, CHUNK_SIZE in batches' worth)")
    parser.add_argument("--parallel", type=int, default=8, help="chunks ingested at once (default 8)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = ModelConfig.azure(args.scale)
    with fresh_azurite() as azurite:
        rows = [case(azurite, config, min(args.messages * items, MOST_IDS), items,
                     args.chunk_size or default_chunk_size(CHUNK_SIZE.default, items), args.parallel)
                for items in (1, 10, 100, MOST)]  # fmt: skip
    base = rows[0]
    for row in rows:
        for key in ("ids_per_second", "queue_ids_per_second", "requests_per_million_ids"):
            row[f"{key}_ratio"] = row[key] / base[key]
    if args.json:
        print(json.dumps({"scale": args.scale, "chunk_size": args.chunk_size or "default", "rows": rows}))
        return
    chunks = f"{args.chunk_size:,}" if args.chunk_size else "the default size"
    print(f"one queue at {config.queue_rate:g} msg/s (Azure / {args.scale:g}), chunks of {chunks}, "
          f"{args.parallel} at once")  # fmt: skip
    print(
        "| batch_max_items | IDs | IDs a message | queue IDs/s | x unbatched | run IDs/s | x unbatched "
        "| requests per 1M IDs | x unbatched | 503s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['batch_max_items']} | {row['ids']:,} | {row['items_per_message']:.0f} | "
              f"{row['queue_ids_per_second']:,.0f} | {row['queue_ids_per_second_ratio']:.1f} | "
              f"{row['ids_per_second']:,.0f} | {row['ids_per_second_ratio']:.1f} | "
              f"{row['requests_per_million_ids']:,.0f} | {row['requests_per_million_ids_ratio']:.4f} | "
              f"{row['throttled']} |")  # fmt: skip


if __name__ == "__main__":
    main()
