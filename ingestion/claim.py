"""One invocation at a time per chunk: an ETag-guarded claim with a lease, renewed at each checkpoint.

A second invocation of the same chunk (a trigger retry, a duplicate event, a redrive) waits while
the owner's lease is live, then either finds the chunk ingested or takes over from its checkpoint.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from core.contract import ChunkRef
from core.errors import UpdateConflictError
from core.run_scope import count_confirmed, retries_in_scope
from core.run_store import FINAL_CHUNK_STATES, ChunkStatus, RunStore, utc_now


class ChunkClaim:
    def __init__(
        self, runs: RunStore, ref: ChunkRef, status: ChunkStatus, lease_seconds: float, back_from_waiting: bool = False
    ) -> None:
        self.back_from_waiting = back_from_waiting  # the chunk had paused on its run's max_backlog
        self._runs = runs
        self._ref = ref
        self._status = status
        self._lease_seconds = lease_seconds
        self._lock = asyncio.Lock()
        self._retries_at_claim = retries_in_scope() - status.retries  # earlier invocations' retries carry on

    @property
    def sent(self) -> int:
        """Where sending resumes: every item before it was confirmed sent."""
        return self._status.sent

    @property
    def by_queue(self) -> tuple[int, ...]:
        return self._status.by_queue

    @property
    def queued(self) -> int | None:
        return self._status.queued

    async def checkpoint(self, sent: int, by_queue: tuple[int, ...] = (), queued: int | None = None) -> None:
        lease_until = time.time() + self._lease_seconds
        await self._write(replace(self._status, sent=sent, by_queue=by_queue, queued=queued, lease_until=lease_until,
                                  waiting=""))  # fmt: skip

    async def complete(self, count: int, by_queue: tuple[int, ...] = (), queued: int | None = None) -> ChunkStatus:
        done = replace(self._status, state="ingested", sent=count, count=count, by_queue=by_queue, queued=queued,
                       lease_until=0.0, waiting="")  # fmt: skip
        return await self._write(done)

    async def wait_for_backlog(
        self, sent: int, by_queue: tuple[int, ...] = (), queued: int | None = None
    ) -> ChunkStatus:
        """Sending pauses at `sent` while a target queue is over its run's max_backlog; the claim is let go
        (the chunk comes back from the redrive queue) and the status says why it does not move."""
        paused = replace(self._status, sent=sent, by_queue=by_queue, queued=queued, lease_until=0.0, waiting="backlog")
        return await self._write(paused)

    async def fail(self, error: str) -> ChunkStatus:
        return await self._write(replace(self._status, state="failed", error=error, lease_until=0.0, waiting=""))

    async def stop(self, sent: int, by_queue: tuple[int, ...] = (), queued: int | None = None) -> ChunkStatus:
        """The run was stopped: `sent` items are sent, the rest waits for a redrive."""
        stopped = replace(self._status, state="stopped", sent=sent, by_queue=by_queue, queued=queued, lease_until=0.0,
                          waiting="")  # fmt: skip
        return await self._write(stopped)

    async def release(self) -> None:
        """Ends the lease early (after an error) so that a retry need not wait for it to expire."""
        await self._write(replace(self._status, lease_until=0.0))

    async def _write(self, changed: ChunkStatus) -> ChunkStatus:
        async with self._lock:
            retries = retries_in_scope() - self._retries_at_claim  # this invocation's, counted in its run scope
            updated = replace(changed, updated_at=utc_now(), retries=retries)
            written = await self._runs.put_chunk_status(self._ref, updated, expected=self._status)
            count_confirmed(written.sent - self._status.sent)  # this invocation's own sends, for its metrics
            self._status = written
            return self._status


async def claim_chunk(runs: RunStore, ref: ChunkRef, owner: str, lease_seconds: float) -> ChunkClaim | ChunkStatus:
    """A claim to send the chunk, or its final status when this invocation has nothing to do: `ingested`, or
    `failed` (final until a redrive of its run reopens it as `stopped`: a late or doubled delivery never
    writes over a failure)."""
    poll = min(2.0, lease_seconds / 4)
    while True:
        current = await runs.chunk_status(ref)
        if current is not None and current.state in FINAL_CHUNK_STATES:
            return current
        if current is not None and current.leased(time.time()):
            await asyncio.sleep(poll)
            continue
        claimed = replace(
            current or ChunkStatus(ref.index, "ingesting", sent=0, count=0, updated_at=""),
            state="ingesting", owner=owner, lease_until=time.time() + lease_seconds, error=None, updated_at=utc_now(),
            waiting="",  # claimed, it waits on nothing: whatever ends this claim says why it stops again, if it does
        )  # fmt: skip
        try:
            status = await runs.put_chunk_status(ref, claimed, expected=current)
        except UpdateConflictError:
            continue
        return ChunkClaim(runs, ref, status, lease_seconds, current is not None and current.waits_on_backlog)
