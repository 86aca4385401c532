"""Chunks the configured source (SOURCE_URL …) in a process of its own, so that its peak RSS is chunking's
alone; prints one JSON line: the run's state, error, chunks, messages and `peak_rss_mb`.

    python -m testkit.chunking_child CHUNK_SIZE [RUN_ID]
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from typing import Any

from chunking.chunker import start_chunking
from chunking.request import IngestionRequest, new_run_id
from core.context import app_context
from core.storage import close_storage_clients
from testkit.process_memory import rss_mb

ADDRESS_SPACE = 4 << 30  # so that the unbounded growth the memory tests guard against fails fast, here


async def chunk(chunk_size: int, run_id: str) -> dict[str, Any]:
    try:
        request = IngestionRequest("default", chunk_size, run_id)
        record, _ = await start_chunking(await app_context(), request, budget=None)
    finally:
        await close_storage_clients()
    return {"state": record.state, "error": record.error, "chunks": record.chunks, "messages": record.messages}


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    run_id = sys.argv[2] if len(sys.argv) > 2 else new_run_id()
    print(json.dumps({**asyncio.run(chunk(int(sys.argv[1]), run_id)), "peak_rss_mb": rss_mb("VmHWM")}))
