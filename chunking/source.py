"""Reads the items of a configured source API with httpx, parsing the body as it streams in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import ijson

from fanout.errors import SourceError
from fanout.settings import SourceConfig


async def stream_items(source: SourceConfig, timeout: float) -> AsyncIterator[Any]:
    """Yields the items of the source's JSON array one by one, never holding the whole body."""
    where = f"source {source.name!r} ({httpx.URL(source.url).host})"
    try:
        async with (
            httpx.AsyncClient(headers=dict(source.headers), timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", source.url) as response,
        ):
            if not response.is_success:
                body = (await response.aread())[:300].decode("utf-8", "replace")
                raise SourceError(f"{where} answered {response.status_code} {response.reason_phrase}: {body}")
            async for item in ijson.items(_ArrayReader(response.aiter_bytes(), where), "item", use_float=True):
                yield item
    except httpx.HTTPError as exc:
        raise SourceError(f"{where} failed: {type(exc).__name__}: {exc}") from None
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
