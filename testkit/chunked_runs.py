"""Runs as chunking leaves them, written directly, for tests of what ingestion and purge do with them."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import azure.functions as func

from core.context import app_context
from core.contract import COUNT_METADATA, FIRST_METADATA, encode_chunk
from core.run_store import RunRecord, utc_now
from testkit.http_requests import chunk_blob
from testkit.storage_probe import StorageProbe

Run = Callable[[Coroutine[Any, Any, Any]], Any]  # runs a coroutine to its end on the test's loop

BIG = "x" * 50_000  # 50,000 bytes, 66,668 after base64: over the limit only once encoded


def write_chunked_run(on_loop: Run, probe: StorageProbe, run_id: str, items: list[str], **fields: Any) -> str:
    """A run as chunking leaves it: its record (with `fields`: its message shape, say), and one chunk blob holding
    `items`, the source's first (its blob waits for its trigger)."""
    ctx = on_loop(app_context())
    record = RunRecord(run_id, "default", 5000, created_at=utc_now(), **fields)
    etag = on_loop(ctx.runs.create(record))
    name = f"{run_id}/000000.jsonl"
    probe.chunks.upload_blob(name, encode_chunk(items), metadata={COUNT_METADATA: str(len(items)), FIRST_METADATA: "0"})
    on_loop(ctx.runs.save(record.chunked(chunks=1, messages=len(items)), if_match=etag))
    return name


def delivered(probe: StorageProbe, name: str) -> func.InputStream:
    """The chunk as the blob trigger hands it over."""
    download = probe.chunks.download_blob(name)
    return chunk_blob("chunks", name, download.readall(), download.properties.metadata)
