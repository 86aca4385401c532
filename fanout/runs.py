"""Run records and chunk statuses, kept as small blobs in the runs container.

`{run_id}/run.json` is written by the chunking side; `{run_id}/chunks/{index}` by the ingestion
side, its state in the blob's metadata so one listing reads every chunk's status.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from fanout.chunk_contract import ChunkRef

RunState = Literal["chunking", "chunked", "failed"]
ChunkState = Literal["ingested", "failed"]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    source: str
    chunk_size: int
    state: RunState = "chunking"
    chunks: int | None = None
    messages: int | None = None
    error: str | None = None
    created_at: str = ""
    chunked_at: str | None = None

    def finished(self, chunks: int, messages: int) -> RunRecord:
        return replace(self, state="chunked", chunks=chunks, messages=messages, chunked_at=utc_now())

    def failed(self, error: str, chunks: int, messages: int) -> RunRecord:
        return replace(self, state="failed", error=error, chunks=chunks, messages=messages, chunked_at=utc_now())


@dataclass(frozen=True)
class ChunkStatus:
    index: int
    state: ChunkState
    sent: int
    count: int
    updated_at: str
    error: str | None = None


class RunStore:
    def __init__(self, blobs: BlobServiceClient, container: str) -> None:
        self._container: ContainerClient = blobs.get_container_client(container)

    async def create(self, record: RunRecord) -> bool:
        """Writes the record only if the run is new; False when it already exists."""
        try:
            await self._container.upload_blob(_run_blob(record.run_id), _to_json(record), overwrite=False)
        except ResourceExistsError:
            return False
        return True

    async def get(self, run_id: str) -> RunRecord | None:
        data = await self._download(_run_blob(run_id))
        return None if data is None else RunRecord(**json.loads(data))

    async def save(self, record: RunRecord) -> None:
        await self._container.upload_blob(_run_blob(record.run_id), _to_json(record), overwrite=True)

    async def chunk_status(self, ref: ChunkRef) -> ChunkStatus | None:
        try:
            props = await self._container.get_blob_client(_chunk_blob(ref)).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return await self._status_from(_chunk_blob(ref), props.metadata)

    async def save_chunk_status(self, ref: ChunkRef, status: ChunkStatus) -> None:
        metadata = {
            "index": str(status.index),
            "state": status.state,
            "sent": str(status.sent),
            "count": str(status.count),
            "updated_at": status.updated_at,
        }
        body = (status.error or "").encode("utf-8")
        await self._container.upload_blob(_chunk_blob(ref), body, overwrite=True, metadata=metadata)

    async def chunk_statuses(self, run_id: str) -> list[ChunkStatus]:
        listing = self._container.list_blobs(name_starts_with=f"{run_id}/chunks/", include=["metadata"])
        statuses = [self._status_from(blob.name, blob.metadata) async for blob in listing]
        return sorted(await asyncio.gather(*statuses), key=lambda status: status.index)

    async def _status_from(self, name: str, metadata: dict[str, str]) -> ChunkStatus:
        state = metadata["state"]
        error = None
        if state == "failed":
            data = await self._download(name)
            error = None if data is None else data.decode("utf-8")
        return ChunkStatus(
            index=int(metadata["index"]),
            state=state,
            sent=int(metadata["sent"]),
            count=int(metadata["count"]),
            updated_at=metadata["updated_at"],
            error=error,
        )

    async def _download(self, name: str) -> bytes | None:
        try:
            stream = await self._container.download_blob(name)
        except ResourceNotFoundError:
            return None
        return await stream.readall()


def _run_blob(run_id: str) -> str:
    return f"{run_id}/run.json"


def _chunk_blob(ref: ChunkRef) -> str:
    return f"{ref.run_id}/chunks/{ref.padded_index}"


def _to_json(record: RunRecord) -> bytes:
    return json.dumps(asdict(record)).encode("utf-8")
