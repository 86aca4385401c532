"""One invocation chunks a run at a time, and a run whose chunker dies is seen to be stranded.

The claim lives in the run record (`owner`, `lease_until`), written over its ETag as every save of the
record is. While chunking runs, `kept` renews the lease every `renew_every` seconds and saves, with it,
the progress the chunker says is safe (chunks known written and where to resume after them): a run
keeps a resumable position however it ends, and `updated_at` says when it last moved. If the claim is
lost (another invocation took over a lease that ran out, a purge deleted the record), chunking is
cancelled and `kept` raises UpdateConflictError: the chunker stops without saving anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from core.errors import ClaimLostError, UpdateConflictError
from core.run_store import RunRecord, RunStore, new_owner, utc_now

MAX_RENEW_EVERY = 5.0  # seconds between saves of a chunker's progress, at most


class ChunkingClaim:
    def __init__(self, runs: RunStore, record: RunRecord, etag: str, lease_seconds: float) -> None:
        self._runs = runs
        self._etag = etag
        self._lease_seconds = lease_seconds
        self._owner = new_owner()
        self._lock = asyncio.Lock()
        self.record = record

    @classmethod
    async def take(cls, runs: RunStore, record: RunRecord, etag: str, lease_seconds: float) -> ChunkingClaim:
        """Claims the run as it stands at `etag`; ClaimLostError when it moved on or another invocation's
        claim on it is live."""
        if record.leased(time.time()):
            raise ClaimLostError(
                f"run {record.run_id!r} is being chunked by {record.owner} (its claim runs until "
                f"{time.strftime('%H:%M:%S', time.gmtime(record.lease_until))} UTC)"
            )
        claim = cls(runs, record, etag, lease_seconds)
        await claim.save(record)
        return claim

    @classmethod
    async def wait_for_free(cls, runs: RunStore, run_id: str, lease_seconds: float) -> tuple[RunRecord, str] | None:
        """The run as it stands once no live claim holds it (a chunker that died lets its lease run out);
        ClaimLostError when its claim was renewed meanwhile (its chunker is alive). None: no such run."""
        versioned = await runs.get_versioned(run_id)
        if versioned is not None and versioned[0].leased(time.time()):
            await asyncio.sleep(max(0.0, versioned[0].lease_until - time.time()) + 0.1)
            versioned = await runs.get_versioned(run_id)
            if versioned is not None and versioned[0].leased(time.time()):
                raise ClaimLostError(f"run {run_id!r} is being chunked by {versioned[0].owner}, which is alive")
        return versioned

    @property
    def renew_every(self) -> float:
        return min(MAX_RENEW_EVERY, self._lease_seconds / 4)

    async def save(self, record: RunRecord, *, release: bool = False) -> None:
        """Writes `record` with the claim renewed (or, with `release`, let go) over the last save of ours."""
        async with self._lock:
            owner, until = (None, 0.0) if release else (self._owner, time.time() + self._lease_seconds)
            claimed = replace(record, owner=owner, lease_until=until, updated_at=utc_now())
            try:
                self._etag = await self._runs.save(claimed, if_match=self._etag)
            except UpdateConflictError:
                if not await self._ours_after_all():
                    raise
                self._etag = await self._runs.save(claimed, if_match=self._etag)
            self.record = claimed

    async def _ours_after_all(self) -> bool:
        """After an ETag mismatch: whether the record's last write was ours (a save cancelled before its answer
        came); if so its ETag becomes ours. Only the owner writes its own name in the record."""
        current = await self._runs.get_versioned(self.record.run_id)
        if current is None or current[0].owner != self._owner:
            return False
        self._etag = current[1]
        return True

    @contextlib.asynccontextmanager
    async def kept(self, progress: Callable[[], RunRecord]) -> AsyncIterator[None]:
        """Renews the claim, saving `progress()`, while the body runs; a lost claim cancels the body and
        is raised as UpdateConflictError."""
        holder = asyncio.current_task()
        assert holder is not None
        lost: list[UpdateConflictError] = []

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.renew_every)
                try:
                    await self.save(progress())
                except UpdateConflictError as exc:
                    lost.append(exc)
                    holder.cancel()
                    return

        renewal = asyncio.create_task(renew())
        try:
            yield
        except asyncio.CancelledError:
            if lost and holder.uncancel() == 0:
                raise lost[0] from None
            raise
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
