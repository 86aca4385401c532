"""What the benchmarks run in a process of their own, so its memory and CPU are the app's alone.

    python -m benchmarks.child chunk      # chunk the source (SOURCE_URL) into blobs, nothing else
    python -m benchmarks.child pipeline   # the whole local pipeline: chunk, then ingest every chunk

Reads the app's settings from the environment; prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from chunking.chunker import start_chunking
from chunking.request import IngestionRequest, new_run_id
from core.context import app_context
from core.storage import close_storage_clients
from runs.local import run_here
from testkit.process_memory import rss_mb


async def chunk_only() -> dict[str, Any]:
    ctx = await app_context()
    before = rss_mb("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    record, _ = await start_chunking(ctx, IngestionRequest("default", 5000, new_run_id()), budget=None)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"state": record.state, "messages": record.messages, "chunks": record.chunks, "seconds": seconds,
            "cpu_seconds": cpu, "rss_before_mb": before}  # fmt: skip


async def whole_pipeline() -> dict[str, Any]:
    started = time.perf_counter()
    status = await run_here(await app_context(), IngestionRequest("default", 5000, new_run_id()))
    return {"state": status.state, "enqueued": status.messages.enqueued, "seconds": time.perf_counter() - started}


async def main(case: str) -> dict[str, Any]:
    try:
        return await {"chunk": chunk_only, "pipeline": whole_pipeline}[case]()
    finally:
        await close_storage_clients()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["chunk", "pipeline"])
    result = asyncio.run(main(parser.parse_args().case))
    print(json.dumps({**result, "peak_rss_mb": rss_mb("VmHWM")}))
