"""The one retry helper: backoff with jitter, Retry-After, attempts and a deadline."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from core.errors import SourceError
from core.retry import Attempts, RetryPolicy, backoff_delay, retry_after_seconds


@pytest.mark.parametrize("attempt", [1, 2, 3, 6, 40, 10_000])
def test_backoff_doubles_with_jitter_and_never_passes_the_cap(attempt):
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=8.0)
    step = min(8.0, 0.5 * 2.0 ** min(attempt - 1, 64))
    delays = [backoff_delay(policy, attempt) for _ in range(200)]
    assert all(step / 2 <= delay <= step for delay in delays)
    assert max(delays) - min(delays) > 0  # jittered


def test_retry_after_wins_but_is_capped():
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=10.0)
    assert backoff_delay(policy, 1, retry_after=3.0) == 3.0
    assert backoff_delay(policy, 1, retry_after=3_600.0) == 10.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, None), ("", None), ("7", 7.0), ("-3", 0.0), ("1.5", 1.5), ("nan", None), ("soon", None),
     ("1e400", None), ("-inf", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after_reads_seconds_or_a_date(header, seconds):
    assert retry_after_seconds(header) == seconds


def test_retry_after_date_in_the_future():
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_seconds(later) <= 30


def test_attempts_give_up_after_the_policy_with_the_reason():
    attempts = Attempts(RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0), give_up=SourceError)

    async def fail_until_given_up() -> None:
        while True:
            await attempts.wait("source answered 503")

    with pytest.raises(SourceError, match=r"^source answered 503 \(gave up after 3 attempts\)$"):
        asyncio.run(fail_until_given_up())
    assert attempts.retries == 2


def test_attempts_give_up_when_the_wait_would_pass_the_deadline():
    policy = RetryPolicy(attempts=100, base_delay=0.0, max_delay=60.0)
    attempts = Attempts(policy, give_up=SourceError, deadline=time.monotonic() + 1.0)
    started = time.monotonic()
    with pytest.raises(SourceError, match="out of time"):
        asyncio.run(attempts.wait("busy", retry_after=30.0))
    assert time.monotonic() - started < 0.5  # it did not sleep first
