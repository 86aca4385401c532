"""Reads the items of a configured source API with httpx, parsing the body as it streams in.

Connect errors, timeouts, a body cut short, 408/429 and 5xx are retried (see `chunking.retry`);
a retried response resumes after the items already read, so the source must answer the same
items in the same order on each call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ijson

from chunking.retry import RETRYABLE_STATUS, backoff, retry_after_seconds
from fanout.errors import SourceError
from fanout.settings import RetryConfig, SourceConfig


class _TransientError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


async def stream_items(source: SourceConfig, timeout: float, retry: RetryConfig) -> AsyncIterator[Any]:
    """Yields the items of the source's JSON array one by one, never holding the whole body."""
    where = f"source {source.name!r} ({httpx.URL(source.url).host})"
    read = 0
    async with httpx.AsyncClient(headers=dict(source.headers), timeout=timeout, follow_redirects=False) as client:
        for attempt in range(1, retry.max_attempts + 1):
            try:
                position = 0
                async for item in _items(client, source.url, where):
                    position += 1
                    if position > read:
                        read = position
                        yield item
                return
            except _TransientError as exc:
                if attempt == retry.max_attempts:
                    raise SourceError(f"{exc} (gave up after {attempt} attempts)") from None
                await asyncio.sleep(backoff(retry, attempt, exc.retry_after))


async def _items(client: httpx.AsyncClient, url: str, where: str) -> AsyncIterator[Any]:
    try:
        async with client.stream("GET", url) as response:
            if not response.is_success:
                body = (await response.aread())[:300].decode("utf-8", "replace")
                reason = f"{where} answered {response.status_code} {response.reason_phrase}: {body}"
                if response.status_code in RETRYABLE_STATUS:
                    raise _TransientError(reason, retry_after_seconds(response.headers.get("Retry-After")))
                raise SourceError(reason)
            async for item in ijson.items(_ArrayReader(response.aiter_bytes(), where), "item", use_float=True):
                yield item
    except httpx.TransportError as exc:
        raise _TransientError(f"{where} failed: {type(exc).__name__}: {exc or 'no details'}") from None
    except ijson.JSONError as exc:
        raise SourceError(f"{where} answered invalid JSON: {str(exc).splitlines()[0]}") from None


class _ArrayReader:
    """The async file ijson reads from; refuses a body whose top level is not an array."""

    def __init__(self, parts: AsyncIterator[bytes], where: str) -> None:
        self._parts = parts
        self._where = where
        self._checked = False

    async def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        part = await anext(self._parts, b"")
        if not self._checked and part.strip():
            self._checked = True
            head = part.lstrip()
            if not head.startswith(b"["):
                raise SourceError(f"{self._where} must answer a JSON array, got {head[:60]!r}")
        return part
