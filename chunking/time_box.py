"""How long one chunking invocation reads the source, and when it must stop, mid-page or mid-answer.

An HTTP call must answer within 230 s; a `continue_chunking` invocation must end before the function
timeout. Chunk boundaries depend only on the source, so an invocation that stops resumes at its last
chunk boundary: what it read past that is read again by the next one.

- the command line: no limit.
- an HTTP call: stops at the budget (a paged source) or at `HTTP_READ_LIMIT` (one unpaged answer, which
  is cheaper to finish than to read again), whether or not it wrote a chunk: a continuation takes over.
- a continuation: stops at the budget once it has written a chunk; until then it goes on, up to
  CHUNKING_TIME_LIMIT, where the run fails: it cannot hand on what it could not advance.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
HTTP_READ_LIMIT = 200.0  # seconds an HTTP call reads at most: 30 s of its 230 are left to upload and answer


class OutOfTimeError(Exception):
    """The invocation's time ran out while it read the source."""


class TimeBox:
    """`budget_at`, `limit_at`: `time.monotonic()` instants, or None; `hands_on_empty`: may stop before
    it has written a chunk. `stop_at` is when reading stops, as it stands (read for every item)."""

    def __init__(self, budget_at: float | None = None, limit_at: float | None = None, hands_on_empty: bool = False):
        self._budget_at = budget_at
        self._limit_at = limit_at
        self._hands_on_empty = hands_on_empty
        self._progressed = False
        self.stop_at = self._stop_at()

    @classmethod
    def http_call(cls, budget: float, paged: bool) -> TimeBox:
        now = time.monotonic()
        return cls(now + budget if paged else None, now + HTTP_READ_LIMIT, hands_on_empty=True)

    @classmethod
    def continuation(cls, budget: float, limit: float, paged: bool) -> TimeBox:
        now = time.monotonic()
        return cls(now + budget if paged else None, now + limit)

    def chunk_written(self) -> None:
        self._progressed = True
        self.stop_at = self._stop_at()

    @property
    def may_hand_on(self) -> bool:
        return self._progressed or self._hands_on_empty

    def is_up(self) -> bool:
        return self.stop_at is not None and time.monotonic() >= self.stop_at

    def _stop_at(self) -> float | None:
        if self._budget_at is not None and self.may_hand_on:
            return self._budget_at if self._limit_at is None else min(self._budget_at, self._limit_at)
        return self._limit_at

    async def within(self, step: Awaitable[T], answer_by: float | None = None) -> T:
        """Awaits `step` until the box stops it (OutOfTimeError) or `answer_by` passes (TimeoutError)."""
        stop = self.stop_at
        until = min((at for at in (stop, answer_by) if at is not None), default=None)
        if until is None:
            return await step
        try:
            async with asyncio.timeout(until - time.monotonic()):
                return await step
        except TimeoutError:
            if until == stop:
                raise OutOfTimeError from None
            raise
