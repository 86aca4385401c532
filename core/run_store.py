"""Run records and chunk statuses (small blobs in the runs container), and the chunks a run has written.

The run record is written by the chunking side, a chunk's status by the ingestion side, its state
in the blob's metadata so one listing reads every chunk's status (names: core/contract.py). A run's
stop (cancelled, or failed past its tolerance) and its completion event are small blobs of their own,
each written once (if-none-match), so neither races the record's ETag nor a chunk's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, cast

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from core.contract import (
    CONTINUATION_KEY_BLOB,
    RUN_INDEX_PREFIX,
    ChunkRef,
    ResumePosition,
    chunk_statuses_prefix,
    run_event_mark_blob,
    run_index_blob,
    run_prefix,
    run_record_blob,
    run_stop_blob,
    sweep_log_blob,
)
from core.delivery import MAX_MESSAGE_BYTES, Delivery
from core.errors import ChunkError, ClaimLostError, ContractError, UpdateConflictError

RecordState = Literal["chunking", "chunked", "failed"]
ChunkState = Literal["ingesting", "ingested", "failed", "stopped"]  # stopped: at a checkpoint, resumable
StopReason = Literal["cancelled", "failed"]
CHUNK_STATES = ("ingesting", "ingested", "failed", "stopped")
FINAL_CHUNK_STATES = ("ingested", "failed")  # no delivery moves them; only a run's redrive reopens a failed one
EVENT_METADATA = "event"  # on the completion mark: `sending`, then `sent` once the event is on its queue
WEBHOOK_STARTED = "webhook_started"  # when the webhook delivery under way started (none: none is)
WEBHOOK_METADATA = ("webhook", "webhook_deliveries", "webhook_reason", WEBHOOK_STARTED)  # to RUN_EVENTS_WEBHOOK
PURGING_METADATA = "purging"  # on a run record a purge is deleting: the run reads as gone, its id is not yet free
_STATUS_NAME = re.compile(r"[0-9]{6,12}")  # a chunk status's name after its run's prefix


def new_owner() -> str:
    """A name for one claim's holder (a chunk's, a slot's, chunking's): its host, process and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def timestamp(at: str) -> float:
    """Seconds since the epoch of a `utc_now()` timestamp; 0 (long ago) for none, or one unreadable."""
    try:
        return datetime.fromisoformat(at).timestamp()
    except ValueError:
        return 0.0


def unix_ms(timestamp: str) -> int:
    """Milliseconds since the epoch of a `utc_now()` timestamp."""
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)


@dataclass(frozen=True)
class RunRecord:
    """A run as chunking keeps it. While it is `chunking`, `resume` always says where chunking carries on
    (the start, until a chunk is known written), and it is kept when the source fails the run, so that a
    redrive carries chunking on from there. `owner` and `lease_until` are the claim of the invocation
    chunking it (chunking/chunking_claim.py), renewed while it works; `updated_at` is when the record was
    last written (the sweeper resumes a run nobody has moved for SWEEP_STALE_SECONDS)."""

    run_id: str
    source: str
    chunk_size: int
    state: RecordState = "chunking"
    chunks: int | None = None
    messages: int | None = None
    error: str | None = None
    created_at: str = ""
    chunked_at: str | None = None
    resume: ResumePosition | None = field(default_factory=ResumePosition)
    pages: int = 0  # source pages before `resume` (SOURCE_MAX_PAGES counts across continuations)
    page_before: str | None = None  # digest of the items of the page before `resume`'s (a repeat is noticed)
    seen: str | None = None  # sketch of the distinct items read before `resume` (chunking/distinct_items.py)
    max_concurrency: int = 0  # chunk invocations ingesting the run at once (0: no cap): ingestion/slots.py
    max_failed_chunks: int = 0  # failed chunks the run tolerates and still completes
    max_failed_percent: int = 0  # ... in percent of its chunks (0: no such threshold): core/status.py
    batch_max_items: int = 1  # the shape of its messages (core/delivery.py), the run's from its start
    batch_max_bytes: int = MAX_MESSAGE_BYTES
    batch_input: dict[str, Any] | None = None
    envelope: bool = False
    max_backlog: int = 0  # a target queue's messages above which its chunks wait (0: off): ingestion/backlog.py
    chunk_max_bytes: int = 0  # CHUNK_MAX_BYTES as the run started (0: a record from before it was kept)
    page_size: int = 0  # its source's SOURCE_PAGE_SIZE as the run started: `page` mode's positions depend on it
    generation: str = ""  # new for each run made under its run_id (core/contract.py); "": a record from before
    owner: str | None = None
    lease_until: float = 0.0
    updated_at: str = ""

    @property
    def delivery(self) -> Delivery:
        return Delivery(self.batch_max_items, self.batch_max_bytes, self.batch_input, self.envelope)

    def chunked(self, chunks: int, messages: int) -> RunRecord:
        """Chunking reached the source's end: `chunks` chunks of `messages` items in all."""
        return replace(self, state="chunked", chunks=chunks, messages=messages, chunked_at=utc_now(), resume=None)

    def failed(self, error: str, chunks: int, messages: int) -> RunRecord:
        """The source failed the run; `resume` (where chunking stood) is kept for a redrive."""
        return replace(self, state="failed", error=error, chunks=chunks, messages=messages, chunked_at=utc_now())

    def reopened(self) -> RunRecord:
        """Chunking carries on from `resume` (a redrive of a run the source failed)."""
        return replace(self, state="chunking", error=None, chunked_at=None)

    @property
    def resumable(self) -> bool:
        """Chunking can carry on: it was stopped, or the source failed it, before the source's end."""
        return self.state in ("chunking", "failed") and self.resume is not None

    def leased(self, now: float) -> bool:
        """An invocation is chunking the run and has renewed its claim in time."""
        return self.state == "chunking" and self.owner is not None and self.lease_until > now


def index_entry(record: RunRecord) -> str:
    """The run's entry in the run index (core/contract.py), named from its creation time."""
    return run_index_blob(unix_ms(record.created_at or utc_now()), record.run_id)


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
    by_queue: tuple[int, ...] = ()  # of `sent`, how many went to each target queue (with more than one)
    etag: str | None = field(default=None, compare=False)
    retries: int = 0  # Put Message retries (throttled, timed out, connection broken), over every invocation
    queued: int | None = None  # queue messages holding the `sent` items (None: one each; batches hold more)
    waiting: str = ""  # why it waits without sending: "backlog" (its run's max_backlog), else ""

    @property
    def messages_sent(self) -> int:
        """Queue messages sent: `sent` unless its run batches items."""
        return self.sent if self.queued is None else self.queued

    @property
    def waits_on_backlog(self) -> bool:
        """Paused at its checkpoint while a target queue is over its run's max_backlog; its hand-back (or the
        sweeper, should that be lost) brings it back. A chunk in any other state waits on nothing."""
        return self.state == "ingesting" and self.waiting == "backlog"

    def leased(self, now: float) -> bool:
        """A sender holds the chunk and has renewed its claim in time."""
        return self.state == "ingesting" and self.lease_until > now

    def pending(self, now: float) -> bool:
        """It needs sending again: failed, stopped at a checkpoint, or left `ingesting` with its lease run out
        (but for one that waits on the backlog: its hand-back is scheduled already)."""
        return self.state in ("failed", "stopped") or (
            self.state == "ingesting" and not self.leased(now) and not self.waits_on_backlog
        )

    def stalled(self, now: float, stale: float) -> bool:
        """Left by its sender and unmoved for `stale` seconds: `ingesting` with its lease run out, or `stopped`
        (which a stopped run keeps so: whoever asks knows the run is not stopped)."""
        return (
            self.state in ("ingesting", "stopped")
            and not self.leased(now)
            and now - timestamp(self.updated_at) >= stale
        )


@dataclass(frozen=True)
class EventMark:
    """A run's completion mark: `sending` until its sender confirms the event on its queue."""

    etag: str
    sending: bool
    marked_at: float  # seconds since the epoch: when it was last written (marked, taken over, or updated)
    webhook: dict[str, str] = field(default_factory=dict)  # its delivery to the webhook (WEBHOOK_METADATA)

    @property
    def webhook_started(self) -> float | None:
        """When the webhook delivery under way started, seconds since the epoch by its deliverer's clock; None when
        no delivery is under way (none yet, or the last one recorded its outcome)."""
        try:
            return float(self.webhook[WEBHOOK_STARTED])
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class PurgeMark:
    """A purge's mark on a run's record: the record (None for a stand-in), its ETag, when it was last written."""

    record: RunRecord | None
    etag: str
    marked_at: float


@dataclass(frozen=True)
class RunStop:
    """Why and when a run was stopped: every chunk and chunking stop at their next checkpoint."""

    reason: StopReason
    at: str


class RunStore:
    def __init__(self, blobs: BlobServiceClient, container: str) -> None:
        self._container: ContainerClient = blobs.get_container_client(container)
        self._signing_key: bytes | None = None

    async def signing_key(self) -> bytes:
        """The key that signs list continuations, the same for every instance: made once, kept in storage."""
        if self._signing_key is None:
            key = await self._download(CONTINUATION_KEY_BLOB)
            if key is None:
                with contextlib.suppress(ResourceExistsError):  # another instance made it first: use theirs
                    await self._container.upload_blob(CONTINUATION_KEY_BLOB, secrets.token_bytes(32), overwrite=False)
                key = await self._download(CONTINUATION_KEY_BLOB)
            if not key:
                raise ContractError(f"{CONTINUATION_KEY_BLOB} in the runs container is empty")
            self._signing_key = key
        return self._signing_key

    async def create(self, record: RunRecord) -> str | None:
        """Writes the record only if the run is new, and its index entry: its ETag, or None when the run
        already exists. A new run starts from nothing: whatever else its prefix holds is an earlier run's with
        this id, written as a purge went by (a cancel's stop, a finisher's completion mark), and is deleted."""
        blob = self._container.get_blob_client(run_record_blob(record.run_id))
        try:
            result = await blob.upload_blob(_to_json(record), overwrite=False)
        except ResourceExistsError:
            return None
        async for leftover in self._container.list_blobs(name_starts_with=run_prefix(record.run_id)):
            if leftover.name != run_record_blob(record.run_id):
                with contextlib.suppress(ResourceNotFoundError):
                    await self._container.delete_blob(leftover.name)
        with contextlib.suppress(ResourceExistsError):  # only the run's creator writes it: it exists, it is this
            await self._container.upload_blob(index_entry(record), b"", overwrite=False)
        return str(result["etag"])

    async def index_page(self, size: int, marker: str | None) -> tuple[list[str], str | None]:
        """One page of the run index (newest first), `size` names from `marker` on, and the next page's marker."""
        pages = self._container.list_blobs(name_starts_with=RUN_INDEX_PREFIX, results_per_page=size).by_page(
            continuation_token=marker
        )
        names = [blob.name async for blob in await anext(pages)]
        return names, pages.continuation_token or None  # type: ignore[attr-defined]

    async def stop_of(self, run_id: str) -> RunStop | None:
        data = await self._download(run_stop_blob(run_id))
        if data is None:
            return None
        value = json.loads(data)
        if (
            not isinstance(value, dict)
            or value.get("reason") not in ("cancelled", "failed")
            or not isinstance(value.get("at"), str)
        ):
            raise ContractError(f"{run_stop_blob(run_id)} is not a run's stop: {data[:100]!r}")
        return RunStop(value["reason"], value["at"])

    async def stop(self, run_id: str, reason: StopReason) -> tuple[RunStop, str | None]:
        """Stops the run for `reason` unless it is stopped already; returns the stop in force, and the ETag of
        the one this call wrote (None: it was stopped already)."""
        stop = RunStop(reason, utc_now())
        try:
            blob = self._container.get_blob_client(run_stop_blob(run_id))
            result = await blob.upload_blob(json.dumps(asdict(stop)), overwrite=False)
        except ResourceExistsError:
            return await self.stop_of(run_id) or stop, None
        return stop, str(result["etag"])

    async def lift_stop_written(self, run_id: str, etag: str) -> None:
        """Lifts the stop its caller wrote (`stop`'s ETag), never one written since."""
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
            await self._container.delete_blob(
                run_stop_blob(run_id), etag=etag, match_condition=MatchConditions.IfNotModified
            )

    async def lift_failed_stop(self, run_id: str) -> bool:
        """Lifts the run's stop if it is a `failed` one, only as it was read (a cancel written since stays)."""
        try:
            stream = await self._container.download_blob(run_stop_blob(run_id))
            if json.loads(await stream.readall()).get("reason") != "failed":
                return False
            await self._container.delete_blob(
                run_stop_blob(run_id), etag=stream.properties.etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    async def event_record(self, run_id: str) -> dict[str, object] | None:
        """The completion event the run sent, if it has, with `webhook`: its delivery to the webhook as the mark
        records it (WEBHOOK_METADATA; empty when it has none)."""
        try:
            stream = await self._container.download_blob(run_event_mark_blob(run_id))
        except ResourceNotFoundError:
            return None
        event = cast(dict[str, object], json.loads(await stream.readall()))
        return {**event, "webhook": _webhook_metadata(stream.properties.metadata)}

    async def mark_event(self, run_id: str, event: bytes) -> str | None:
        """Records the run's completion event, `sending`, if no one has: its ETag (this caller sends it), else None."""
        blob = self._container.get_blob_client(run_event_mark_blob(run_id))
        try:
            result = await blob.upload_blob(event, overwrite=False, metadata={EVENT_METADATA: "sending"})
        except ResourceExistsError:
            return None
        return str(result["etag"])

    async def event_mark(self, run_id: str) -> EventMark | None:
        """The run's completion mark as it stands, without its event (None: nobody has marked it)."""
        try:
            props = await self._container.get_blob_client(run_event_mark_blob(run_id)).get_blob_properties()
        except ResourceNotFoundError:
            return None
        sending = (props.metadata or {}).get(EVENT_METADATA) == "sending"  # a mark without it predates the field
        return EventMark(str(props.etag), sending, props.last_modified.timestamp(), _webhook_metadata(props.metadata))

    async def mark_sent(
        self, run_id: str, etag: str, webhook: Mapping[str, str] | None = None, *, started: float | None = None
    ) -> str | None:
        """Marks the completion event sent (on its queue), with its webhook delivery (WEBHOOK_METADATA) and, for
        one under way, when it `started`, only over the mark `etag` names: the mark's new ETag, or None when
        someone took it over (or deleted it) meanwhile."""
        under_way = {WEBHOOK_STARTED: f"{started:.3f}"} if started is not None else {}
        return await self._set_event_metadata(run_id, etag, "sent", {**(webhook or {}), **under_way})

    async def take_over_event(self, run_id: str, etag: str) -> tuple[bytes, str] | None:
        """Takes over sending an event whose sender died (only over the mark `etag` names): the event and the
        mark's new ETag, or None when it changed meanwhile."""
        new_etag = await self._set_event_metadata(run_id, etag, "sending")
        if new_etag is None:
            return None
        try:
            stream = await self._container.download_blob(
                run_event_mark_blob(run_id), etag=new_etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return await stream.readall(), new_etag

    async def _set_event_metadata(
        self, run_id: str, etag: str, state: str, webhook: Mapping[str, str] | None = None
    ) -> str | None:
        blob = self._container.get_blob_client(run_event_mark_blob(run_id))
        try:
            result = await blob.set_blob_metadata(
                {EVENT_METADATA: state, **(webhook or {})}, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return str(result["etag"])

    async def unmark_event(self, run_id: str, etag: str) -> None:
        """Takes back a completion mark whose event could not be sent (only the mark `etag` names), so that
        a retry sends it."""
        blob = self._container.get_blob_client(run_event_mark_blob(run_id))
        try:
            await blob.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            return
        except ResourceModifiedError:
            raise UpdateConflictError(f"the completion mark of run {run_id!r} was changed meanwhile") from None

    async def lift_stop(self, run_id: str) -> None:
        """Lifts the run's stop and its completion mark (a redrive): it may run, and end, again. Whatever
        they hold: the mark changes as its event is sent."""
        for name in (run_stop_blob(run_id), run_event_mark_blob(run_id)):
            with contextlib.suppress(ResourceNotFoundError):
                await self._container.delete_blob(name)

    async def get(self, run_id: str) -> RunRecord | None:
        versioned = await self.get_versioned(run_id)
        return versioned[0] if versioned else None

    async def get_versioned(self, run_id: str) -> tuple[RunRecord, str] | None:
        """The record and its ETag, for a save that must not overwrite someone else's; None for a run that
        does not exist or that a purge is deleting."""
        read = await self._record_blob(run_id)
        if read is None or PURGING_METADATA in read[1]:
            return None
        return _from_json(read[0]), read[2]

    async def mark_purging(self, run_id: str, etag: str) -> str:
        """Marks the record as being purged, now, only as `etag` names it (a purge's own mark, renewed); returns
        the marked ETag. From then on the run reads as gone and `create` cannot take its id, until
        `drop_purged` deletes it; UpdateConflictError if it was written since (another purge took the mark
        over), or is gone."""
        blob = self._container.get_blob_client(run_record_blob(run_id))
        try:
            result = await blob.set_blob_metadata(
                {PURGING_METADATA: utc_now()}, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise UpdateConflictError(f"run {run_id!r} was updated by another invocation, or purged") from None
        return str(result["etag"])

    async def purge_mark(self, run_id: str) -> PurgeMark | None:
        """The mark a purge left on the run's record (one under way, or cut short); None when there is none."""
        read = await self._record_blob(run_id)
        marked = None if read is None else read[1].get(PURGING_METADATA)
        if read is None or marked is None:
            return None
        try:
            record: RunRecord | None = _from_json(read[0])
        except ContractError:
            record = None  # a purge's stand-in record (`place_purge_mark`), or one out of shape
        return PurgeMark(record, read[2], timestamp(marked))

    async def _record_blob(self, run_id: str) -> tuple[bytes, Mapping[str, str], str] | None:
        """The run record's blob: its bytes, metadata and ETag, in one read; None when there is none."""
        try:
            stream = await self._container.download_blob(run_record_blob(run_id))
        except ResourceNotFoundError:
            return None
        return await stream.readall(), stream.properties.metadata or {}, str(stream.properties.etag)

    async def place_purge_mark(self, run_id: str) -> str | None:
        """Holds a run id that has no record while a purge deletes what is left under it: a marked stand-in
        record, its ETag; None when a record (a new run, another purge's mark) is there."""
        blob = self._container.get_blob_client(run_record_blob(run_id))
        try:
            result = await blob.upload_blob(b"{}", overwrite=False, metadata={PURGING_METADATA: utc_now()})
        except ResourceExistsError:
            return None
        return str(result["etag"])

    async def drop_purged(self, run_id: str, etag: str) -> None:
        """Deletes the record a purge marked (`mark_purging`'s ETag), which frees its id; a record written
        since (a new run under the id) stays."""
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
            await self._container.delete_blob(
                run_record_blob(run_id), etag=etag, match_condition=MatchConditions.IfNotModified
            )

    async def save(self, record: RunRecord, *, if_match: str) -> str:
        """Writes the record only over the version `if_match` names (else UpdateConflictError); returns its new ETag."""
        blob = self._container.get_blob_client(run_record_blob(record.run_id))
        try:
            result = await blob.upload_blob(
                _to_json(record), overwrite=True, etag=if_match, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise UpdateConflictError(f"run {record.run_id!r} was updated by another invocation, or purged") from None
        return str(result["etag"])

    async def chunk_status(self, ref: ChunkRef) -> ChunkStatus | None:
        try:
            props = await self._container.get_blob_client(ref.status_blob).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return await self._with_error(ref.run_id, _status_from(ref.status_blob, ref.index, props.metadata, props.etag))

    async def put_chunk_status(
        self, ref: ChunkRef, status: ChunkStatus, *, expected: ChunkStatus | None
    ) -> ChunkStatus:
        """Writes only over `expected` (its ETag), or only if there is no status yet; else UpdateConflictError."""
        metadata = {
            "index": str(status.index), "state": status.state, "sent": str(status.sent), "count": str(status.count),
            "updated_at": status.updated_at, "owner": status.owner or "", "lease_until": f"{status.lease_until:.3f}",
            "by_queue": ",".join(map(str, status.by_queue)),
            "retries": str(status.retries),
        } | ({"queued": str(status.queued)} if status.queued is not None else {}) | (
            {"waiting": status.waiting} if status.waiting else {}
        )  # fmt: skip
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

    async def chunk_statuses(self, run_id: str, *, with_errors: bool = True) -> list[ChunkStatus]:
        """Every chunk status of the run, in order; `with_errors`: read failed chunks' errors too (a read each)."""
        statuses = [status async for status in self.listed_chunk_statuses(run_id)]
        if with_errors:
            statuses = list(await asyncio.gather(*(self._with_error(run_id, status) for status in statuses)))
        return sorted(statuses, key=lambda status: status.index)

    async def listed_chunk_statuses(self, run_id: str) -> AsyncIterator[ChunkStatus]:
        """The run's chunk statuses as the listing brings them (by name, not by index), without errors: memory
        and event-loop time per page of the listing, however many chunks."""
        prefix = chunk_statuses_prefix(run_id)
        async for blob in self._container.list_blobs(name_starts_with=prefix, include=["metadata"]):
            name = blob.name.removeprefix(prefix)
            ref = ChunkRef(run_id, int(name)) if _STATUS_NAME.fullmatch(name) else None
            if ref is not None and ref.status_blob == blob.name:  # only the name the app writes: no look-alike
                yield _status_from(blob.name, ref.index, blob.metadata, blob.etag)

    async def _with_error(self, run_id: str, status: ChunkStatus) -> ChunkStatus:
        """A failed chunk's status with its error (a read); any other as it is."""
        if status.state != "failed":
            return status
        data = await self._download(ChunkRef(run_id, status.index).status_blob)
        return replace(status, error=None if data is None else data.decode("utf-8", "replace"))

    async def sweep_log(self, run_id: str) -> tuple[dict[str, Any], str | None]:
        """What the sweeper did for the run (empty if nothing yet), and the ETag to save it over."""
        try:
            stream = await self._container.download_blob(sweep_log_blob(run_id))
        except ResourceNotFoundError:
            return {}, None
        return json.loads(await stream.readall()), str(stream.properties.etag)

    async def save_sweep_log(self, run_id: str, log: dict[str, Any], *, etag: str | None) -> None:
        """Writes over the version `etag` names, or only if there is none yet; else UpdateConflictError."""
        blob = self._container.get_blob_client(sweep_log_blob(run_id))
        try:
            if etag is None:
                await blob.upload_blob(json.dumps(log).encode(), overwrite=False)
            else:
                await blob.upload_blob(
                    json.dumps(log).encode(), overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError):
            raise UpdateConflictError(f"the sweep log of run {run_id!r} was updated by another sweep") from None

    async def _download(self, name: str) -> bytes | None:
        try:
            stream = await self._container.download_blob(name)
        except ResourceNotFoundError:
            return None
        return await stream.readall()


def _webhook_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return {key: value for key, value in (metadata or {}).items() if key in WEBHOOK_METADATA}


async def chunks_written(chunks: ContainerClient, run_id: str) -> list[ChunkRef]:
    """The run's chunk blobs in the chunk container `chunks`, in order (blobs of other names are not chunks)."""
    refs = []
    async for blob in chunks.list_blobs(name_starts_with=run_prefix(run_id)):
        with contextlib.suppress(ChunkError):
            refs.append(ChunkRef.parse(blob.name, chunks.container_name))
    return sorted(refs)


async def run_chunks(chunks: ContainerClient, record: RunRecord) -> list[ChunkRef]:
    """The run's chunks, in order: every one its record counts as written (storage may have lost some
    since) and every blob written past that count (chunking under way, or cut short); each of the run's
    generation."""
    counted = {ChunkRef(record.run_id, index) for index in range(record.chunks or 0)}
    refs = sorted(counted | set(await chunks_written(chunks, record.run_id)))
    return [replace(ref, generation=record.generation) for ref in refs]


def _to_json(record: RunRecord) -> bytes:
    fields = asdict(record)
    fields["resume"] = record.resume.to_json() if record.resume else None
    return json.dumps(fields).encode("utf-8")


def _from_json(data: bytes) -> RunRecord:
    try:
        fields = json.loads(data)
        resume = fields.pop("resume", None)
        known = {
            name: value for name, value in fields.items() if name in RunRecord.__dataclass_fields__
        }  # rolling deploy
        if resume is None and known.get("state") == "chunking":
            resume = ResumePosition().to_json()  # written before a chunking run always had a position: its start
        return RunRecord(**known, resume=ResumePosition.from_json(resume) if resume else None)
    except (ValueError, TypeError, AttributeError, RecursionError, ContractError):
        raise ContractError(f"a run record is out of shape: {data[:100]!r}") from None


def _status_from(name: str, index: int, metadata: dict[str, str], etag: str) -> ChunkStatus:
    """The status its blob's metadata holds, its error not read; ContractError unless it is whole and names the
    chunk its blob's name does (a stray index would stand for a chunk that does not exist)."""
    state = metadata.get("state", "")
    if state not in CHUNK_STATES or not all(metadata.get(key, "").isdigit() for key in ("index", "sent", "count")):
        raise ContractError(f"chunk status {name} is out of shape (state {state[:40]!r}); delete it to redrive it")
    if int(metadata["index"]) != index:
        raise ContractError(f"chunk status {name} names chunk {metadata['index'][:20]}; delete it to redrive it")
    try:
        return ChunkStatus(
            index=index, state=cast(ChunkState, state), sent=int(metadata["sent"]), count=int(metadata["count"]),
            updated_at=metadata.get("updated_at", ""), owner=metadata.get("owner") or None,
            lease_until=float(metadata.get("lease_until") or 0), etag=etag,
            by_queue=tuple(int(count) for count in (metadata.get("by_queue") or "").split(",") if count),
            retries=int(metadata.get("retries") or 0),
            queued=int(metadata["queued"]) if metadata.get("queued", "").isdigit() else None,
            waiting=metadata.get("waiting", ""),
        )  # fmt: skip
    except ValueError:
        raise ContractError(f"chunk status {name} is out of shape; delete it to redrive it") from None
