"""Reads the items of a configured source API with httpx, page by page, from any position.

Without pagination the one response is parsed as it streams (ijson), so memory is bounded by a
chunk, not by the source. Paged responses are read a page at a time. Connect errors, timeouts, a
body cut short, 408/429 and 5xx are retried (`core.retry`); a retried stream resumes after the
items already read, so a source must answer the same items in the same order each time.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import ijson

from chunking.items_path import ijson_prefix, items_at, value_at
from core.contract import ResumePosition
from core.errors import SourceError
from core.retry import Attempts, RetryPolicy, retry_after_seconds
from core.settings import SourceConfig

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class _TransientError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class SourceReader:
    def __init__(self, source: SourceConfig, timeout: float, retry: RetryPolicy) -> None:
        self._source = source
        self._retry = retry
        self._origin = httpx.URL(source.url)
        self._where = f"source {source.name!r} ({self._origin.host})"
        self._client = httpx.AsyncClient(headers=dict(source.headers), timeout=timeout, follow_redirects=False)

    async def __aenter__(self) -> SourceReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def items(self, start: ResumePosition) -> AsyncGenerator[tuple[Any, ResumePosition | None]]:
        """Each item with the position just after it (None: nothing follows it)."""
        if self._source.pagination == "none":
            async for item, taken in self._streamed(start.skip):
                yield item, ResumePosition(None, taken)
            return
        page, skip = start.page, start.skip
        while True:
            items, next_page = await self._page(page)
            for index in range(skip, len(items)):
                after: ResumePosition | None
                if index + 1 < len(items):
                    after = ResumePosition(page, index + 1)
                else:
                    after = None if next_page is None else ResumePosition(next_page)
                yield items[index], after
            if next_page is None or not items:
                return
            page, skip = next_page, 0

    async def _page(self, page: str | int | None) -> tuple[list[Any], str | int | None]:
        """A page's items and the next page (None after the last)."""
        source = self._source
        if source.pagination == "page":
            number = source.first_page if page is None else int(page)
            params = {source.page_param: number, source.page_size_param: source.page_size}
            response = await self._get(source.url, params)
            items = items_at(self._json(response), source.items_path)
            return items, (number + 1 if items else None)
        if source.pagination == "cursor":
            response = await self._get(source.url, {source.cursor_param: page} if page else {})
            document = self._json(response)
            cursor = value_at(document, source.cursor_path)
            return items_at(document, source.items_path), (str(cursor) if cursor not in (None, "") else None)
        response = await self._get(self._same_origin(str(page)) if page else source.url, {})  # next-link
        document = self._json(response)
        link = value_at(document, source.next_path) if source.next_path else response.links.get("next", {}).get("url")
        return items_at(document, source.items_path), (str(response.url.join(link)) if link else None)

    def _same_origin(self, link: str) -> str:
        """A next link is followed only on the source's own scheme, host and port (no request forgery)."""
        url = httpx.URL(link)
        if (url.scheme, url.host, url.port) != (self._origin.scheme, self._origin.host, self._origin.port):
            raise SourceError(
                f"{self._where}: next link {url} points to another host; only {self._origin.host} is followed"
            )
        return link

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise SourceError(f"{self._where} answered invalid JSON: {exc}") from None

    async def _get(self, url: str, params: dict[str, Any]) -> httpx.Response:
        attempts = Attempts(self._retry, give_up=SourceError)
        while True:
            try:
                # Merged by hand: httpx's params= would drop the query the URL already has.
                response = await self._client.get(httpx.URL(url).copy_merge_params(params))
                self._check(response)
                return response
            except httpx.TransportError as exc:
                failure = _TransientError(f"{self._where} failed: {type(exc).__name__}: {exc or 'no details'}")
            except _TransientError as exc:
                failure = exc
            await attempts.wait(str(failure), retry_after=failure.retry_after)

    async def _streamed(self, skip: int) -> AsyncIterator[tuple[Any, int]]:
        """The one response's items as it streams, each with how many items precede it plus one."""
        read = skip
        prefix = ijson_prefix(self._source.items_path)
        attempts = Attempts(self._retry, give_up=SourceError)
        while True:
            try:
                async with self._client.stream("GET", self._source.url) as response:
                    if not response.is_success:
                        await response.aread()
                    self._check(response)
                    position = 0
                    reader = _BodyReader(response.aiter_bytes(), self._where, self._source.items_path)
                    async for item in ijson.items(reader, prefix, use_float=True):
                        position += 1
                        if position > read:
                            read = position
                            yield item, read
                return
            except httpx.TransportError as exc:
                failure = _TransientError(f"{self._where} failed: {type(exc).__name__}: {exc or 'no details'}")
            except _TransientError as exc:
                failure = exc
            except ijson.JSONError as exc:
                raise SourceError(f"{self._where} answered invalid JSON: {str(exc).splitlines()[0]}") from None
            await attempts.wait(str(failure), retry_after=failure.retry_after)

    def _check(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        reason = f"{self._where} answered {response.status_code} {response.reason_phrase}: {response.text[:300]}"
        if response.status_code in RETRYABLE_STATUS:
            raise _TransientError(reason, retry_after_seconds(response.headers.get("Retry-After")))
        raise SourceError(reason)


class _BodyReader:
    """The async file ijson reads from; refuses a body that does not start as the items path says."""

    def __init__(self, parts: AsyncIterator[bytes], where: str, items_path: str) -> None:
        self._parts = parts
        self._where = where
        self._expected = b"[" if not items_path else b"{"
        self._checked = False

    async def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        part = await anext(self._parts, b"")
        if not self._checked and part.strip():
            self._checked = True
            head = part.lstrip()
            if not head.startswith(self._expected):
                shape = "a JSON array" if self._expected == b"[" else "a JSON object"
                raise SourceError(f"{self._where} must answer {shape}, got {head[:60]!r}")
        return part
