"""One way to retry a call: exponential backoff with jitter, a server's Retry-After, an overall deadline.

The caller keeps its own idea of what is worth retrying; this module only decides how long to wait
and when to give up:

    attempts = Attempts(policy, give_up=SourceError)
    while True:
        try:
            return await call()
        except TransientFailure as exc:
            await attempts.wait(str(exc), retry_after=exc.retry_after)   # sleeps, or raises SourceError
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int  # calls in all, the first one included
    base_delay: float  # seconds before the second attempt (before jitter)
    max_delay: float  # no wait is longer, whatever the backoff or Retry-After says


def backoff_delay(policy: RetryPolicy, attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (from 1): Retry-After when the server
    gave one, else exponential with jitter ("equal jitter": between half and all of the step)."""
    if retry_after is not None:
        return min(retry_after, policy.max_delay)
    step = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt - 1, 32))
    return step * random.uniform(0.5, 1.0)


def retry_after_seconds(header: str | None) -> float | None:
    """Retry-After as finite seconds ≥ 0: either a number of seconds or an HTTP date; None when absent or
    unreadable. Callers bound it to what they will wait."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None  # NaN or infinity is no answer
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Attempts:
    """The attempts at one call under a policy; `deadline` is a `time.monotonic()` instant, or None;
    `on_retry` is told of each retry before its wait (a chunk's metrics count them)."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        give_up: Callable[[str], Exception],
        deadline: float | None = None,
        on_retry: Callable[[], None] = lambda: None,
    ) -> None:
        self._policy = policy
        self._give_up = give_up
        self._deadline = deadline
        self._on_retry = on_retry
        self.number = 1  # the attempt under way

    @property
    def retries(self) -> int:
        return self.number - 1

    async def wait(self, failure: str, *, retry_after: float | None = None) -> None:
        """After a failed attempt: sleeps before the next one, or raises `give_up(reason)` when the
        attempts are used up or the wait would end past the deadline."""
        if self.number >= self._policy.attempts:
            raise self._give_up(f"{failure} (gave up after {self.number} attempts)")
        delay = backoff_delay(self._policy, self.number, retry_after)
        if self._deadline is not None and time.monotonic() + delay >= self._deadline:
            raise self._give_up(f"{failure} (gave up after {self.number} attempts: out of time)")
        self._on_retry()
        await asyncio.sleep(delay)
        self.number += 1
