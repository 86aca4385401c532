"""When and how long to wait before calling a source again."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from core.settings import RetryConfig

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def retry_after_seconds(header: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def backoff(config: RetryConfig, attempt: int, retry_after: float | None) -> float:
    """The server's Retry-After when it gave one, else exponential with jitter; capped at max_delay."""
    if retry_after is not None:
        return min(retry_after, config.max_delay)
    return min(config.max_delay, config.base_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
