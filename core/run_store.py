"""Run records and chunk statuses (small blobs in the runs container), and the chunks a run has written.

The run record is written by the chunking side, a chunk's status by the ingestion side, its state
in the blob's metadata so one listing reads every chunk's status (names: core/contract.py).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, cast

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from core.contract import (
    ChunkRef,
    ResumePosition,
    chunk_statuses_prefix,
    run_prefix,
    run_record_blob,
    sweep_log_blob,
)
from core.errors import ClaimLostError, ContractError

RunState = Literal["chunking", "chunked", "failed"]
ChunkState = Literal["ingesting", "ingested", "failed"]


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
    resume: ResumePosition | None = None  # where chunking continues (state "chunking", after a time budget)
    pages: int = 0  # source pages before `resume` (SOURCE_MAX_PAGES counts across continuations)
    page_before: str | None = None  # digest of the items of the page before `resume`'s (a repeat is noticed)
    max_concurrency: int = 0  # chunk invocations ingesting the run at once (0: no cap): ingestion/slots.py

    def paused(self, chunks: int, messages: int, resume: ResumePosition) -> RunRecord:
        return replace(self, chunks=chunks, messages=messages, resume=resume)

    def finished(self, chunks: int, messages: int) -> RunRecord:
        return replace(self, state="chunked", chunks=chunks, messages=messages, chunked_at=utc_now(), resume=None)

    def failed(self, error: str, chunks: int, messages: int) -> RunRecord:
        return replace(
            self, state="failed", error=error, chunks=chunks, messages=messages, chunked_at=utc_now(), resume=None
        )


@dataclass(frozen=True)
class ChunkStatus:
    """A chunk's progress: `sent` is the checkpoint, the position below which every message is confirmed sent."""

    index: int
    state: ChunkState
    sent: int
    count: int
    updated_at: str
    error: str | None = None
    owner: str | None = None
    lease_until: float = 0.0
    etag: str | None = field(default=None, compare=False)
    retries: int = 0  # Put Message retries (throttled, timed out, connection broken), over every invocation

    def leased(self, now: float) -> bool:
        return self.state == "ingesting" and self.lease_until > now


class RunStore:
    def __init__(self, blobs: BlobServiceClient, container: str) -> None:
        self._container: ContainerClient = blobs.get_container_client(container)

    async def create(self, record: RunRecord) -> str | None:
        """Writes the record only if the run is new: its ETag, or None when the run already exists."""
        blob = self._container.get_blob_client(run_record_blob(record.run_id))
        try:
            result = await blob.upload_blob(_to_json(record), overwrite=False)
        except ResourceExistsError:
            return None
        return str(result["etag"])

    async def get(self, run_id: str) -> RunRecord | None:
        versioned = await self.get_versioned(run_id)
        return versioned[0] if versioned else None

    async def get_versioned(self, run_id: str) -> tuple[RunRecord, str] | None:
        """The record and its ETag, for a save that must not overwrite someone else's."""
        try:
            stream = await self._container.download_blob(run_record_blob(run_id))
        except ResourceNotFoundError:
            return None
        return _from_json(await stream.readall()), str(stream.properties.etag)

    async def save(self, record: RunRecord, *, if_match: str) -> str:
        """Writes the record only over the version `if_match` names (else ClaimLostError); returns its new ETag."""
        blob = self._container.get_blob_client(run_record_blob(record.run_id))
        try:
            result = await blob.upload_blob(
                _to_json(record), overwrite=True, etag=if_match, match_condition=MatchConditions.IfNotModified
            )
        except ResourceModifiedError:
            raise ClaimLostError(f"run {record.run_id!r} was updated by another invocation") from None
        return str(result["etag"])

    async def chunk_status(self, ref: ChunkRef) -> ChunkStatus | None:
        try:
            props = await self._container.get_blob_client(ref.status_blob).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return await self._status_from(ref.status_blob, props.metadata, props.etag)

    async def put_chunk_status(
        self, ref: ChunkRef, status: ChunkStatus, *, expected: ChunkStatus | None
    ) -> ChunkStatus:
        """Writes only over `expected` (its ETag), or only if there is no status yet; else ClaimLostError."""
        metadata = {
            "index": str(status.index), "state": status.state, "sent": str(status.sent), "count": str(status.count),
            "updated_at": status.updated_at, "owner": status.owner or "", "lease_until": f"{status.lease_until:.3f}",
            "retries": str(status.retries),
        }  # fmt: skip
        body = (status.error or "").encode("utf-8")
        try:
            blob = self._container.get_blob_client(ref.status_blob)
            if expected is None:
                result = await blob.upload_blob(body, metadata=metadata, overwrite=False)
            else:
                result = await blob.upload_blob(
                    body, metadata=metadata, overwrite=True, etag=expected.etag,
                    match_condition=MatchConditions.IfNotModified,
                )  # fmt: skip
        except (ResourceExistsError, ResourceModifiedError):
            raise ClaimLostError(f"chunk {ref.blob_name} was claimed or updated by another invocation") from None
        return replace(status, etag=result["etag"])

    async def chunk_statuses(self, run_id: str) -> list[ChunkStatus]:
        listing = self._container.list_blobs(name_starts_with=chunk_statuses_prefix(run_id), include=["metadata"])
        statuses = [self._status_from(blob.name, blob.metadata, blob.etag) async for blob in listing]
        return sorted(await asyncio.gather(*statuses), key=lambda status: status.index)

    async def _status_from(self, name: str, metadata: dict[str, str], etag: str) -> ChunkStatus:
        state = metadata["state"]
        if state not in ("ingesting", "ingested", "failed"):
            raise ContractError(f"chunk status {name} has the unknown state {state[:40]!r}")
        error = None
        if state == "failed":
            data = await self._download(name)
            error = None if data is None else data.decode("utf-8")
        return ChunkStatus(
            index=int(metadata["index"]), state=cast(ChunkState, state), sent=int(metadata["sent"]),
            count=int(metadata["count"]),
            updated_at=metadata["updated_at"], error=error, owner=metadata.get("owner") or None,
            lease_until=float(metadata.get("lease_until") or 0), etag=etag,
            retries=int(metadata.get("retries") or 0),
        )  # fmt: skip

    async def sweep_log(self, run_id: str) -> tuple[dict[str, Any], str | None]:
        """What the sweeper did for the run (empty if nothing yet), and the ETag to save it over."""
        try:
            stream = await self._container.download_blob(sweep_log_blob(run_id))
        except ResourceNotFoundError:
            return {}, None
        return json.loads(await stream.readall()), str(stream.properties.etag)

    async def save_sweep_log(self, run_id: str, log: dict[str, Any], *, etag: str | None) -> None:
        """Writes over the version `etag` names, or only if there is none yet; else ClaimLostError."""
        blob = self._container.get_blob_client(sweep_log_blob(run_id))
        try:
            if etag is None:
                await blob.upload_blob(json.dumps(log).encode(), overwrite=False)
            else:
                await blob.upload_blob(
                    json.dumps(log).encode(), overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError):
            raise ClaimLostError(f"the sweep log of run {run_id!r} was updated by another sweep") from None

    async def _download(self, name: str) -> bytes | None:
        try:
            stream = await self._container.download_blob(name)
        except ResourceNotFoundError:
            return None
        return await stream.readall()


async def chunks_written(chunks: ContainerClient, run_id: str) -> list[ChunkRef]:
    """The run's chunk blobs in the chunk container `chunks`, in order."""
    names = [blob.name async for blob in chunks.list_blobs(name_starts_with=run_prefix(run_id))]
    return sorted(ChunkRef.parse(name, chunks.container_name) for name in names)


def _to_json(record: RunRecord) -> bytes:
    fields = asdict(record)
    fields["resume"] = record.resume.to_json() if record.resume else None
    return json.dumps(fields).encode("utf-8")


def _from_json(data: bytes) -> RunRecord:
    fields = json.loads(data)
    resume = fields.pop("resume", None)
    return RunRecord(**fields, resume=ResumePosition.from_json(resume) if resume else None)
