"""What one dashboard refresh costs for a run of 20,000 chunks: the status and the chunk map, each read the
way the page reads them (through the app's HTTP functions), timed, and their storage requests counted by
a proxy in front of Azurite.

    .venv/bin/python -m benchmarks.status_read [--chunks 20000] [--failed 20] [--json]

The run is written straight into storage: its record and one status per chunk (all ingested but a
hundred ingesting and `--failed` failed, each with its error), as its chunk invocations would leave it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

import azure.functions as func

from api.http import get_ingestion_chunks, get_ingestion_status
from benchmarks.counting_proxy import CountingProxy
from benchmarks.pipeline import proxied_connection_string
from core.context import app_context
from core.contract import ChunkRef
from core.run_store import ChunkStatus, RunRecord, utc_now
from core.storage import close_storage_clients
from core.together import run_together
from fanout.azurite import start_azurite

RUN_ID = "status-read"
CHUNK_SIZE = 50
STORAGE_SETTING = "AzureWebJobsStorage"  # the app's storage, as the settings name it


async def write_run(chunks: int, failed: int) -> None:
    ctx = await app_context()
    now = utc_now()
    record = RunRecord(RUN_ID, source="default", chunk_size=CHUNK_SIZE, state="chunked", chunks=chunks,
                       messages=chunks * CHUNK_SIZE, created_at=now, chunked_at=now, resume=None)  # fmt: skip
    await ctx.runs.create(record)
    pending = iter(range(chunks))

    async def write_next() -> None:
        for index in pending:
            state = "failed" if index < failed else "ingesting" if index >= chunks - 100 else "ingested"
            error = "line 1 is not valid JSON" if state == "failed" else None
            sent = CHUNK_SIZE if state == "ingested" else 0
            status = ChunkStatus(index=index, state=state, sent=sent, count=CHUNK_SIZE, updated_at=now, error=error)
            await ctx.runs.put_chunk_status(ChunkRef(RUN_ID, index), status, expected=None)

    await run_together(write_next() for _ in range(32))
    await close_storage_clients()


def measured(read: Callable[[func.HttpRequest], Any], path: str, proxy: CountingProxy) -> dict[str, Any]:
    request = func.HttpRequest("GET", f"http://localhost/api/{path}", route_params={"run_id": RUN_ID}, body=b"")

    async def once() -> tuple[float, int, int]:
        await app_context()  # the clients exist already in a warm app: not counted
        proxy.requests.clear()
        started = time.perf_counter()
        answer = await read(request)
        seconds = time.perf_counter() - started
        await close_storage_clients()
        return seconds, sum(proxy.requests.values()), len(answer.get_body())

    runs = [asyncio.run(once()) for _ in range(3)]
    best = min(runs)
    return {"seconds": round(best[0], 3), "storage_requests": best[1], "answer_bytes": best[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--failed", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    azurite = start_azurite()
    proxy = CountingProxy(azurite.blob_port).start()
    try:
        os.environ[STORAGE_SETTING] = azurite.connection_string  # written straight, read through the proxy
        started = time.perf_counter()
        asyncio.run(write_run(args.chunks, args.failed))
        written = time.perf_counter() - started
        os.environ[STORAGE_SETTING] = proxied_connection_string(proxy.port, azurite.queue_port)
        result = {
            "chunks": args.chunks, "failed": args.failed, "written_seconds": round(written, 1),
            "status": measured(get_ingestion_status, f"ingestions/{RUN_ID}", proxy),
            "chunk_map": measured(get_ingestion_chunks, f"ingestions/{RUN_ID}/chunks", proxy),
        }  # fmt: skip
    finally:
        proxy.stop()
        azurite.close()
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
