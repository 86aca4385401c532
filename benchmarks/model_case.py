"""One client of benchmarks.azure_model, in a process of its own, so its CPU is the client's alone
(the Azure model, a proxy in the parent, would count otherwise).

    python -m benchmarks.model_case enqueue CLIENT --queue-port Q --blob-port B --messages N --window W
    python -m benchmarks.model_case fanout --index I --messages N        # settings from the environment

`enqueue` runs one of benchmarks.enqueue's clients (naive, sdk, ours) against the model's endpoints and
prints {"messages_per_second", "cpu_us_per_message"}. `fanout` is one blob-trigger invocation on an
instance of its own: it uploads its chunk and ingests a small one to warm up, prints "ready", waits for
a line on stdin (every instance starts at once), ingests its chunk and prints what it took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import ingestion.target
import putmessage.sender
from benchmarks.enqueue import async_sdk_client, ingestion_path, naive_sdk_loop
from core.context import app_context
from core.contract import COUNT_METADATA, ChunkRef, encode_chunk
from core.run_scope import run_scope
from core.settings import Settings
from core.storage import close_storage_clients
from fanout.azurite import Azurite
from fanout.demo_api import demo_ids
from ingestion.chunk import ingest_chunk
from putmessage.pace import SendPace

CLIENTS = {"naive": naive_sdk_loop, "sdk": async_sdk_client, "ours": ingestion_path}
WARM_UP = 20  # messages in the warm-up chunk: the process's clients are built, the queues created


def enqueue(client: str, queue_port: int, blob_port: int, messages: int, window: int) -> dict[str, Any]:
    endpoints = Azurite(blob_port=blob_port, queue_port=queue_port, table_port=0, location=Path("."))
    rate, cpu = CLIENTS[client](endpoints, demo_ids(messages), window)
    return {"messages_per_second": rate, "cpu_us_per_message": cpu}


class UnpacedSends(SendPace):
    """BENCH_PACE=off, the sender before the pace (the baseline): the window sends regardless of 503s, each
    of which sleeps its backoff."""

    def done(self, epoch: int, *, stored: bool = False, throttled: bool = False) -> None:
        super().done(epoch, stored=stored)


async def fanout(index: int, messages: int) -> dict[str, Any]:
    if os.environ.get("BENCH_PACE") == "off":
        ingestion.target.SendPace = UnpacedSends  # type: ignore[misc]
        putmessage.sender.PACED_RETRIES = 0
    ctx = await app_context(Settings.from_env())
    run_id = os.environ["BENCH_RUN_ID"]
    mine, warm_up = ChunkRef(run_id, index), ChunkRef(f"{run_id}-warm", index)
    ids = [f"{index}-{text}" for text in demo_ids(messages)]
    try:
        for ref, texts in ((mine, ids), (warm_up, ids[:WARM_UP])):
            metadata = {COUNT_METADATA: str(len(texts))}
            await ctx.chunk_container.upload_blob(ref.blob_name, encode_chunk(texts), metadata=metadata)
        await ingest_chunk(ctx, warm_up)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        started, cpu = time.time(), time.process_time()
        with run_scope(run_id, index):  # as the trigger runs it: its Put Message retries are counted
            status = await ingest_chunk(ctx, mine)
        return {"started": started, "ended": time.time(), "cpu_seconds": time.process_time() - cpu,
                "state": status.state, "sent": status.sent, "send_retries": status.retries}  # fmt: skip
    finally:
        await close_storage_clients()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cases = parser.add_subparsers(dest="case", required=True)
    one = cases.add_parser("enqueue")
    one.add_argument("client", choices=CLIENTS)
    one.add_argument("--queue-port", type=int, required=True)
    one.add_argument("--blob-port", type=int, required=True)
    one.add_argument("--messages", type=int, required=True)
    one.add_argument("--window", type=int, required=True)
    instance = cases.add_parser("fanout")
    instance.add_argument("--index", type=int, required=True)
    instance.add_argument("--messages", type=int, required=True)
    args = parser.parse_args()
    if args.case == "enqueue":
        result = enqueue(args.client, args.queue_port, args.blob_port, args.messages, args.window)
    else:
        result = asyncio.run(fanout(args.index, args.messages))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
