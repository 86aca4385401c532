"""Reads the items of a configured source API with httpx, page by page, from any position.

Without pagination the one answer is parsed as it streams (ijson), so memory is bounded by a chunk,
not by the source. A page is read whole, up to SOURCE_MAX_PAGE_BYTES. Every answer is checked as it
arrives: its nesting (SOURCE_MAX_DEPTH), its time (SOURCE_READ_DEADLINE, and the invocation's time box,
which stops a read mid-answer), and an error answer is read no further than SOURCE_MAX_ERROR_BYTES.
Connect errors, timeouts, a body cut short, 408/429 and 5xx are retried (`core.retry`); a retried
stream resumes after the items already read, so a source must answer the same items in the same order
each time. A source that comes back to where it was, or goes past SOURCE_MAX_PAGES or SOURCE_MAX_ITEMS,
fails the run.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import ijson

from chunking.answer_body import AnswerBody, StreamedItems, read_deadline_passed
from chunking.items_path import items_at, value_at
from chunking.repeats import RepeatGuard
from chunking.time_box import TimeBox
from core.contract import ResumePosition
from core.errors import SourceError
from core.retry import Attempts, RetryPolicy, retry_after_seconds
from core.settings import (
    SOURCE_CURSOR_PARAM,
    SOURCE_CURSOR_PATH,
    SOURCE_MAX_ITEMS,
    SOURCE_MAX_PAGES,
    SOURCE_NEXT_PATH,
    SOURCE_PAGE_PARAM,
    SOURCE_URL,
    SourceConfig,
    SourceLimits,
)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
Page = str | int | None  # a page's URL, cursor or number; None: the first page


class _TransientError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class SourcePosition:
    """Where reading resumes, how many pages came before it (SOURCE_MAX_PAGES counts them all), and the
    digest of the items of the page before it (a page that comes back is noticed across invocations)."""

    resume: ResumePosition = field(default_factory=ResumePosition)
    pages: int = 0
    page_before: str | None = None


class SourceReader:
    """`time_box` stops a read mid-answer (OutOfTimeError); `max_item_bytes` bounds an unpaged answer's item."""

    def __init__(
        self, source: SourceConfig, timeout: float, retry: RetryPolicy, limits: SourceLimits, time_box: TimeBox,
        max_item_bytes: int,
    ) -> None:  # fmt: skip
        self._source = source
        self._retry = retry
        self._limits = limits
        self._time_box = time_box
        self._max_item_bytes = max_item_bytes
        self._origin = self._url(
            source.url, f"{source.setting_name(SOURCE_URL)} {source.url!r}", f"source {source.name!r}"
        )
        self._where = f"source {source.name!r} ({self._origin.host})"
        self._client = httpx.AsyncClient(headers=dict(source.headers), timeout=timeout, follow_redirects=False)
        # The last item given: its page, the pages before that page, the items taken from it (or from
        # the one unpaged answer), its length and the page after it; and the items the run took in all.
        self._page: Page = None
        self._pages = 0
        self._index = 0
        self._page_length = 0
        self._next_page: Page = None
        self._taken = 0
        self._repeats = RepeatGuard(self._where, self._repeat_hint(), None, None)  # pages only: `items` sets it

    async def __aenter__(self) -> SourceReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def items(self, start: SourcePosition, taken: int) -> AsyncGenerator[Any]:
        """The items from `start` on; `taken`: how many the run took before it (SOURCE_MAX_ITEMS counts all)."""
        self._taken = taken
        if self._source.pagination == "none":
            async for item in self._streamed(start.resume.skip):
                yield item
            return
        page, skip, self._pages = start.resume.page, start.resume.skip, start.pages
        self._repeats = RepeatGuard(self._where, self._repeat_hint(), page or self._source.url, start.page_before)
        while True:
            if self._pages >= self._limits.max_pages:
                raise SourceError(
                    f"{self._where} has more than {SOURCE_MAX_PAGES.name}={self._limits.max_pages} pages: raise it "
                    f"for a source that long, else check {self._repeat_hint()}"
                )
            items, next_page = await self._read_page(page)
            self._repeats.check(items, next_page)
            self._page, self._page_length, self._next_page = page, len(items), next_page
            for index in range(skip, len(items)):
                self._index = index + 1
                self._take()
                yield items[index]
            if next_page is None or not items:
                return
            page, skip = next_page, 0
            self._pages += 1

    @property
    def pages(self) -> int:
        """Pages read before the one being read (0 for an unpaged source)."""
        return self._pages

    @property
    def after_last(self) -> SourcePosition | None:
        """Just after the last item given; None when nothing follows it."""
        if self._source.pagination == "none" or self._index < self._page_length:
            return SourcePosition(ResumePosition(self._page, self._index), self._pages, self._repeats.page_before)
        if self._next_page is None:
            return None
        return SourcePosition(ResumePosition(self._next_page), self._pages + 1, self._repeats.last_page)

    @property
    def before_last(self) -> SourcePosition:
        """Just before the last item given."""
        return SourcePosition(ResumePosition(self._page, self._index - 1), self._pages, self._repeats.page_before)

    def _take(self) -> None:
        self._taken += 1
        if self._taken > self._limits.max_items:
            raise SourceError(f"{self._where} has more than {SOURCE_MAX_ITEMS.name}={self._limits.max_items} items")

    def _repeat_hint(self) -> str:
        """The setting to check when the source comes back to where it was."""
        source = self._source
        setting, value = {
            "cursor": (SOURCE_CURSOR_PARAM, source.cursor_param),
            "page": (SOURCE_PAGE_PARAM, source.page_param),
        }.get(source.pagination, (SOURCE_NEXT_PATH, source.next_path))
        return f"{source.setting_name(setting)}={value!r}"

    async def _read_page(self, page: Page) -> tuple[list[Any], Page]:
        """A page's items and the next page (None after the last)."""
        source = self._source
        if source.pagination == "page":
            number = source.first_page if page is None else int(page)
            document, _ = await self._get(
                source.url, {source.page_param: number, source.page_size_param: source.page_size}
            )
            items = items_at(document, source.items_path)
            return items, (number + 1 if items else None)
        if source.pagination == "cursor":
            document, _ = await self._get(source.url, {source.cursor_param: page} if page else {})
            return items_at(document, source.items_path), self._cursor(value_at(document, source.cursor_path))
        document, response = await self._get(self._same_origin(str(page)) if page else source.url, {})  # next-link
        link = value_at(document, source.next_path) if source.next_path else response.links.get("next", {}).get("url")
        return items_at(document, source.items_path), self._next_link(response.url, link)

    def _cursor(self, cursor: object) -> str | None:
        if cursor is None or cursor == "":
            return None
        if isinstance(cursor, bool) or not isinstance(cursor, str | int | float):
            setting = self._source.setting_name(SOURCE_CURSOR_PATH)
            raise SourceError(
                f"{self._where}: the cursor at {setting}={self._source.cursor_path!r} must be a string or a number, "
                f"got {type(cursor).__name__}"
            )
        return str(cursor)

    def _next_link(self, base: httpx.URL, link: object) -> str | None:
        if link is None or link == "":
            return None
        if not isinstance(link, str):
            setting = self._source.setting_name(SOURCE_NEXT_PATH)
            raise SourceError(
                f"{self._where}: the next link at {setting}={self._source.next_path!r} must be a string, "
                f"got {type(link).__name__}"
            )
        return str(self._url(link, f"the next link {link[:200]!r}", self._where, base))

    @staticmethod
    def _url(link: str, what: str, where: str, base: httpx.URL | None = None) -> httpx.URL:
        try:
            return base.join(link) if base else httpx.URL(link)
        except httpx.InvalidURL as exc:
            raise SourceError(f"{where}: {what} is not a URL ({exc})") from None

    def _same_origin(self, link: str) -> str:
        """A next link is followed only on the source's own scheme, host and port (no request forgery)."""
        url = httpx.URL(link)
        if (url.scheme, url.host, url.port) != (self._origin.scheme, self._origin.host, self._origin.port):
            raise SourceError(
                f"{self._where}: next link {url} points to another host; only {self._origin.host} is followed"
            )
        return link

    def _json(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError as exc:
            raise SourceError(f"{self._where} answered invalid JSON: {exc}") from None

    async def _get(self, url: str, params: dict[str, Any]) -> tuple[Any, httpx.Response]:
        """A page's JSON, and its answer (for its URL and Link header)."""
        attempts = Attempts(self._retry, give_up=SourceError)
        while True:
            try:
                async with self._answer(url, params) as (response, body):
                    data = await body.whole()
                return self._json(data), response
            except (httpx.TransportError, _TransientError) as exc:
                await self._wait_to_retry(attempts, exc)

    async def _streamed(self, skip: int) -> AsyncIterator[Any]:
        """The one answer's items as it streams, after the first `skip`."""
        self._index = skip
        attempts = Attempts(self._retry, give_up=SourceError)
        while True:
            try:
                async with self._answer(self._source.url, {}) as (_, body):
                    position = 0
                    stream = StreamedItems(body, self._where, self._source.items_path, self._max_item_bytes)
                    async for batch in stream.batches():
                        for item in batch[max(0, self._index - position) :]:
                            self._index += 1
                            self._take()
                            yield item
                        position += len(batch)
                return
            except (httpx.TransportError, _TransientError) as exc:
                await self._wait_to_retry(attempts, exc)
            except ijson.JSONError as exc:
                raise SourceError(f"{self._where} answered invalid JSON: {str(exc).splitlines()[0]}") from None

    async def _wait_to_retry(self, attempts: Attempts, exc: httpx.TransportError | _TransientError) -> None:
        """After a call that may succeed if tried again: waits within the time box, or gives up (SourceError)."""
        failure = (
            exc
            if isinstance(exc, _TransientError)
            else _TransientError(f"{self._where} failed: {type(exc).__name__}: {exc or 'no details'}")
        )
        await self._time_box.within(attempts.wait(str(failure), retry_after=failure.retry_after))

    @asynccontextmanager
    async def _answer(self, url: str, params: dict[str, Any]) -> AsyncIterator[tuple[httpx.Response, AnswerBody]]:
        """The answer at `url`, streamed; an error status raises with the first SOURCE_MAX_ERROR_BYTES of it."""
        # Merged by hand: httpx's params= would drop the query the URL already has.
        request = self._client.build_request("GET", httpx.URL(url).copy_merge_params(params))
        answer_by = time.monotonic() + self._limits.read_deadline
        try:
            response = await self._time_box.within(self._client.send(request, stream=True), answer_by)
        except TimeoutError:
            raise read_deadline_passed(self._where, self._limits) from None
        try:
            body = AnswerBody(response, self._where, self._limits, self._time_box, answer_by)
            if not response.is_success:
                excerpt = (await body.head()).decode("utf-8", "replace")[:300]
                reason = f"{self._where} answered {response.status_code} {response.reason_phrase}: {excerpt}"
                if response.status_code in RETRYABLE_STATUS:
                    raise _TransientError(reason, retry_after_seconds(response.headers.get("Retry-After")))
                raise SourceError(reason)
            yield response, body
        finally:
            await response.aclose()
