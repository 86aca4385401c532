"""A run's `max_concurrency` slots: at most that many chunk invocations ingest the run at once.

Slot n is the blob `{run_id}/slots/NNNN` in the runs container (core/contract.py); its metadata names
the invocation that holds it and until when (`lease_until`, epoch seconds). Taking a slot is an
ETag-guarded write, as a chunk's claim is: a missing slot is created (if-none-match), an expired one
overwritten (if-match), so two invocations never hold the same slot. The holder renews the lease while
it works (`hold`); a holder that dies lets its slot expire after INGEST_LEASE_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob.aio import ContainerClient

from core.contract import slot_blob, slots_prefix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotState:
    slot: int
    lease_until: float
    etag: str


@dataclass
class Slot:
    """A slot this invocation holds."""

    container: ContainerClient
    name: str
    owner: str
    etag: str

    async def set_lease(self, lease_until: float) -> bool:
        """Moves the lease end; False when the slot is no longer ours (our lease ran out and it was taken)."""
        metadata = {"owner": self.owner, "lease_until": f"{lease_until:.3f}"}
        blob = self.container.get_blob_client(self.name)
        for _ in range(2):
            try:
                result = await blob.upload_blob(
                    b"",
                    metadata=metadata,
                    overwrite=True,
                    etag=self.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except ResourceNotFoundError:
                return False
            except ResourceModifiedError:
                if not await self._changed_by_us():
                    return False
                continue
            self.etag = str(result["etag"])
            return True
        return False

    async def _changed_by_us(self) -> bool:
        """After an ETag mismatch: whether the change was our own (a renewal cancelled before its answer
        came, as when the slot is freed mid-renewal); if so its ETag becomes ours."""
        try:
            properties = await self.container.get_blob_client(self.name).get_blob_properties()
        except ResourceNotFoundError:
            return False
        if (properties.metadata or {}).get("owner") != self.owner:
            return False
        self.etag = str(properties.etag)
        return True


async def slot_states(container: ContainerClient, run_id: str) -> dict[int, SlotState]:
    states = {}
    async for blob in container.list_blobs(name_starts_with=slots_prefix(run_id), include=["metadata"]):
        number = blob.name.removeprefix(slots_prefix(run_id))
        if number.isdigit():
            states[int(number)] = SlotState(int(number), _lease_until(blob.metadata), str(blob.etag))
    return states


async def all_slots_busy(container: ContainerClient, run_id: str, size: int, now: float) -> bool:
    """Every one of the run's `size` slots is held under a live lease."""
    states = await slot_states(container, run_id)
    return sum(state.lease_until > now for slot, state in states.items() if slot < size) >= size


async def take_slot(
    container: ContainerClient, run_id: str, size: int, owner: str, lease_seconds: float
) -> Slot | None:
    """One of the run's `size` slots, or None when each is held under a live lease."""
    states = await slot_states(container, run_id)
    now = time.time()
    free = [slot for slot in range(size) if slot not in states or states[slot].lease_until <= now]
    random.shuffle(free)  # invocations starting together try different slots first
    metadata = {"owner": owner, "lease_until": f"{now + lease_seconds:.3f}"}
    for slot in free:
        blob = container.get_blob_client(slot_blob(run_id, slot))
        try:
            if slot in states:
                result = await blob.upload_blob(
                    b"", metadata=metadata, overwrite=True, etag=states[slot].etag,
                    match_condition=MatchConditions.IfNotModified,
                )  # fmt: skip
            else:
                result = await blob.upload_blob(b"", metadata=metadata, overwrite=False)
        except (ResourceExistsError, ResourceModifiedError):
            continue  # another invocation took it first
        return Slot(container, blob.blob_name, owner, str(result["etag"]))
    return None


@contextlib.asynccontextmanager
async def hold(slot: Slot, lease_seconds: float) -> AsyncIterator[None]:
    """Renews the slot's lease every third of it while the body runs; frees the slot afterwards.

    A renewal that fails (a storage timeout) is logged and tried again at the next third; renewing stops
    only when the slot is really lost. Neither a renewal's error nor the freeing's replaces the body's
    outcome."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease_seconds / 3)
            try:
                kept = await slot.set_lease(time.time() + lease_seconds)
            except Exception as exc:
                log.warning("could not renew the concurrency slot %s (%s: %s); trying again in %.0f s",
                            slot.name, type(exc).__name__, exc, lease_seconds / 3)  # fmt: skip
                continue
            if not kept:
                log.warning("lost the concurrency slot %s (its lease ran out before a renewal)", slot.name)
                return

    renewing = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await renewing
        try:
            await slot.set_lease(0.0)
        except Exception as exc:  # the lease then simply expires after INGEST_LEASE_SECONDS
            log.warning("could not free the concurrency slot %s (%s); it expires with its lease", slot.name, exc)


def _lease_until(metadata: dict[str, str] | None) -> float:
    try:
        return float((metadata or {}).get("lease_until") or 0)
    except ValueError:
        return 0.0
