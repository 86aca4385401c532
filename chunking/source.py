"""Reads the items of a configured source API with httpx, page by page, from any position.

Every answer, paged or not, is read as it streams (`chunking/answer_body.py`): memory is bounded by an
item, not by the answer, and each item comes as the exact JSON text the source wrote. Every answer is
checked as it arrives: its nesting (SOURCE_MAX_DEPTH), its time (SOURCE_READ_DEADLINE, and the
invocation's time box, which stops a read mid-answer), a page's size (SOURCE_MAX_PAGE_BYTES), and an
error answer is read no further than SOURCE_MAX_ERROR_BYTES. Connect errors, timeouts, a body cut short
(with or without a length), 408/429 and 5xx are retried (`core.retry`); a certificate that does not
verify against the process's trust store (core/network.py) fails at once; an answer read again resumes
after the items already given, so a source must answer the same items in the same order each time.
Only the source's own end marker ends it: no next position (`cursor`, `next-link`), or an empty page
(`page`); an empty page that names a next one is followed. A source that comes back to where it was,
reads items again past SOURCE_MAX_READS_PER_ITEM, or goes past SOURCE_MAX_PAGES or SOURCE_MAX_ITEMS,
fails the run (`chunking/repeats.py`). A source with SOURCE_AUTH gets its bearer token with every request
(`chunking/source_token.py`); a 401 renews it and asks again, once per answer.
"""

from __future__ import annotations

import json
import ssl
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from chunking.answer_body import AnswerBody, BodyCutShortError, read_deadline_passed
from chunking.repeats import RepeatGuard
from chunking.source_token import Token, fetch_token, source_token
from chunking.time_box import TimeBox
from core.contract import MAX_PAGE_CHARS, ResumePosition
from core.errors import SourceError
from core.json_items import JsonItems, kind_of
from core.network import Network
from core.redact import public_text
from core.retry import Attempts, RetryPolicy, retry_after_seconds
from core.settings import (
    CHUNK_MAX_BYTES,
    SOURCE_AUTH,
    SOURCE_CURSOR_PARAM,
    SOURCE_CURSOR_PATH,
    SOURCE_MAX_ITEMS,
    SOURCE_MAX_PAGES,
    SOURCE_NEXT_PATH,
    SOURCE_PAGE_PARAM,
    SOURCE_URL,
    SSL_CERT_FILE,
    SourceConfig,
    SourceLimits,
)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
Page = str | int | None  # a page's URL, cursor or number; None: the first page
_NEXT = "next"  # the name under which an answer's next cursor or link is captured
_REASON_CHARS = 100  # of a status line's reason phrase
_EXCERPT_CHARS = 300  # of an error answer's body


class _TransientError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _RefusedTokenError(Exception):
    """The source answered 401 to `token`: it is renewed, and the answer asked for again, once."""

    def __init__(self, token: str) -> None:
        super().__init__("the source refused its token")
        self.token = token


@dataclass(frozen=True)
class SourcePosition:
    """Where reading resumes; how many pages came before it (SOURCE_MAX_PAGES counts them all); the digest
    of the page before it (a page that comes back is noticed across invocations); the sketch of the
    distinct items read before it (`chunking/distinct_items.py`; None for an unpaged source)."""

    resume: ResumePosition = field(default_factory=ResumePosition)
    pages: int = 0
    page_before: str | None = None
    seen: str | None = None


class SourceReader:
    """`time_box` stops a read mid-answer (OutOfTimeError); `max_item_bytes` bounds an item."""

    def __init__(
        self, source: SourceConfig, timeout: float, retry: RetryPolicy, limits: SourceLimits, time_box: TimeBox,
        max_item_bytes: int, network: Network,
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
        self._client = httpx.AsyncClient(  # one origin: next links are followed on it alone
            headers={"Accept-Encoding": "gzip, deflate", **source.headers}, timeout=timeout, follow_redirects=False,
            **network.httpx_options(source.url),
        )  # fmt: skip
        self._token = source_token(source.auth) if source.auth.mode != "none" else None
        self._timeout = timeout
        self._network = network
        # The last item given: its page, the pages before that page, the items given from it (or from the
        # one unpaged answer), its answer's length and next page; and the items the run took in all.
        self._page: Page = None
        self._pages = 0
        self._index = 0
        self._length: int | None = None  # the items of the last item's answer, once it has ended
        self._next_page: Page = None  # and the page after it, then
        self._no_next: SourceError | None = None  # or why the page after it cannot be asked for
        # The CRC-32 of the answer's items given, before the last one and with it (None: not known yet)
        self._crcs: tuple[int | None, int | None] = (None, 0)
        self._taken = 0
        self._repeats = self._guard(None, SourcePosition())

    async def __aenter__(self) -> SourceReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    @property
    def paged(self) -> bool:
        return self._source.pagination != "none"

    async def items(self, start: SourcePosition, taken: int) -> AsyncGenerator[str]:
        """The items' JSON texts from `start` on; `taken`: how many the run took before it (SOURCE_MAX_ITEMS
        counts all)."""
        self._taken = taken
        if not self.paged:
            async for item in self._answer_items(self._source.url, {}, start.resume):
                yield item
            return
        self._page, self._pages, resume = start.resume.page, start.pages, start.resume
        self._repeats = self._guard(self._page or self._source.url, start)
        while True:
            if self._pages >= self._limits.max_pages:
                raise SourceError(
                    f"{self._where} has more than {SOURCE_MAX_PAGES.name}={self._limits.max_pages} pages: raise it "
                    f"for a source that long, else check {self._repeat_hint()}"
                )
            url, params = self._request_of(self._page)
            async for item in self._answer_items(url, params, resume):
                yield item
            if self._next_page is None:
                return
            # On to the next page, at its start: where reading resumes if anything fails before its first item
            self._page, self._next_page, resume = self._next_page, None, ResumePosition(self._next_page)
            self._index, self._length, self._crcs = 0, None, (None, 0)
            self._pages += 1
            self._repeats.page_started()

    @property
    def pages(self) -> int:
        """Pages read before the one being read (0 for an unpaged source)."""
        return self._pages

    @property
    def after_last(self) -> SourcePosition | None:
        """Just after the last item given; None when nothing follows it (known once its answer has ended)."""
        if self._length is not None and self._index >= self._length and self._no_next is None:
            if self._next_page is None:
                return None
            after = ResumePosition(self._next_page)
            return SourcePosition(after, self._pages + 1, self._repeats.last_page, self._repeats.seen())
        return self._position(self._index)

    @property
    def before_last(self) -> SourcePosition:
        """Just before the last item given."""
        return self._position(self._index - 1)

    @property
    def last_item(self) -> str:
        """Where the last item given stands, for a reason that names it."""
        return f"item {self._index:,} of {self._page_name if self.paged else 'the answer'}"

    @property
    def _page_name(self) -> str:
        return "the first page" if self._page is None else f"page {self._page!r}"

    def _position(self, index: int) -> SourcePosition:
        """Within the last item's answer: before its `index`-th item (the last one's, or the one before)."""
        seen = self._repeats.seen() if self.paged else None
        crc = self._crcs[1] if index == self._index else self._crcs[0]
        return SourcePosition(ResumePosition(self._page, index, crc), self._pages, self._repeats.before_page, seen)

    def _guard(self, first: Page, start: SourcePosition) -> RepeatGuard:
        return RepeatGuard(self._where, self._repeat_hint(), self._limits, first, start.page_before, start.seen)

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

    def _request_of(self, page: Page) -> tuple[str, dict[str, Any]]:
        """The URL and query parameters that ask for `page`."""
        source = self._source
        if source.pagination == "page":
            number = source.first_page if page is None else int(page)
            return source.url, {source.page_param: number, source.page_size_param: source.page_size}
        if source.pagination == "cursor":
            return source.url, {source.cursor_param: page} if page else {}
        return (self._same_origin(str(page)) if page else source.url), {}

    def _captures(self) -> dict[str, str]:
        """Where in a page its next cursor or link is (none: a next link in the Link header, or `page` mode)."""
        source = self._source
        path = {"cursor": source.cursor_path, "next-link": source.next_path}.get(source.pagination, "")
        return {_NEXT: path} if path else {}

    def _page_after(self, items: int, response: httpx.Response, captured: str | None) -> Page:
        """The page after the one read (None: it was the last), which held `items` items, from its answer."""
        source = self._source
        if source.pagination == "page":
            number = source.first_page if self._page is None else int(self._page)
            return number + 1 if items else None
        if source.pagination == "cursor":
            return self._cursor(captured)
        if source.next_path:
            return self._next_link(response.url, captured, as_json=True)
        return self._next_link(response.url, response.links.get("next", {}).get("url"), as_json=False)

    def _cursor(self, text: str | None) -> str | None:
        """A cursor as the page gave it: a string's value, a number's exact text; null, missing or "": the end."""
        if text is None or text in ("null", '""'):
            return None
        if text[0] == '"':
            cursor = str(json.loads(text))
            self._check_text(cursor, "the cursor")
            return cursor
        if text[0] in "-0123456789":
            self._check_text(text, "the cursor")
            return text
        setting = self._source.setting_name(SOURCE_CURSOR_PATH)
        raise SourceError(
            f"{self._where}: the cursor at {setting}={self._source.cursor_path!r} must be a string or a number, "
            f"got {kind_of(text)}"
        )

    def _next_link(self, base: httpx.URL, link: str | None, *, as_json: bool) -> str | None:
        """The next link: from the body (`as_json`: its JSON text there) or from the Link header."""
        if as_json and link is not None:
            if link == "null":
                return None
            if not link.startswith('"'):
                setting = self._source.setting_name(SOURCE_NEXT_PATH)
                raise SourceError(
                    f"{self._where}: the next link at {setting}={self._source.next_path!r} must be a string, "
                    f"got {kind_of(link)}"
                )
            link = str(json.loads(link))
        if link is None or link == "":
            return None
        self._check_text(link, "the next link")
        url = str(self._url(link, f"the next link {link[:200]!r}", self._where, base))
        self._check_text(url, "the next link")
        return self._same_origin(url)  # refused on the page that gave it, after its items: a redrive reads it again

    def _check_text(self, value: str, what: str) -> None:
        """A cursor or link goes back to the source in a URL, and to a continuation in a queue message: it must
        be text UTF-8 can carry, and short enough for the message."""
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SourceError(
                f"{self._where}: {what} holds a lone surrogate, which no URL can carry: {value[:80]!r}"
            ) from None
        if (size := len(json.dumps(value))) > MAX_PAGE_CHARS:
            raise SourceError(
                f"{self._where}: {what} takes {size:,} characters as JSON, more than the {MAX_PAGE_CHARS:,} a "
                "continuation can carry to the next invocation"
            )

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

    async def _answer_items(self, url: str, params: dict[str, Any], resume: ResumePosition) -> AsyncIterator[str]:
        """The answer's items after the first `resume.skip`, read again (from after the last one given)
        after a failure worth another try; an answer whose items before that point are not the ones read
        before (their CRC) fails the run. A paged answer's items, the skipped ones too, are told to the
        repeat guard, and its end (the next page, the checks of a page) is known before its last items."""
        self._index, self._length, self._next_page, self._no_next = resume.skip, None, None, None
        expected = resume.skipped_crc if resume.skip else 0
        self._crcs = (None, expected)
        attempts = Attempts(self._retry, give_up=SourceError)
        renewed = False  # the token, after a 401 to this answer: a second 401 fails the run
        while True:
            try:
                async with self._answer(url, params, renew=not renewed) as (response, body):
                    self._repeats.page_started()
                    scanner = JsonItems(self._source.items_path, self._captures(), self._max_item_bytes,
                                        f"{CHUNK_MAX_BYTES.name}={self._max_item_bytes}")  # fmt: skip
                    position = crc = 0
                    async for batch, ended in body.items(scanner):
                        skipped = batch[: max(0, self._index - position)]
                        for item in skipped:
                            crc = _crc(item, crc)
                        position += len(batch)
                        if skipped and position >= self._index:
                            self._check_skipped(crc, expected)
                            self._crcs = (None, crc)
                        if ended and position < self._index:
                            raise SourceError(
                                f"{self._where} answered {position:,} items where {self._index:,} were read before: "
                                "going on would lose items (a source must answer a page the same way each time)"
                            )
                        new = batch[len(skipped) :]
                        if self.paged:
                            for item in batch:
                                self._repeats.item(item)
                            self._repeats.check_reads(self._taken + len(new))
                        if ended:
                            following = None
                            if self.paged:
                                try:
                                    following = self._page_after(position, response, scanner.captured.get(_NEXT))
                                except SourceError as exc:  # the page's items are given first: the run keeps them
                                    self._no_next = exc
                                else:
                                    self._repeats.page_ended(following)
                            self._length, self._next_page = position, following
                        for item in new:
                            self._index += 1
                            self._take()
                            before = self._crcs[1]
                            self._crcs = (before, None if before is None else _crc(item, before))
                            yield item
                if self._no_next is not None:  # resumable within this page, after its last item: read again
                    raise self._no_next
                return
            except (httpx.TransportError, _TransientError, BodyCutShortError) as exc:
                await self._wait_to_retry(attempts, exc)
                expected = self._crcs[1]  # read again, the items given must come first, as they were
            except _RefusedTokenError as exc:
                assert self._token is not None
                renewed = True
                await self._time_box.within(self._token.refused(exc.token, self._fetch_token))
                expected = self._crcs[1]
            except SourceError as exc:
                where = f", {self._page_name}" if self.paged else ""
                raise SourceError(str(exc).replace(self._where, self._where + where, 1)) from None

    def _check_skipped(self, crc: int, expected: int | None) -> None:
        if expected is not None and crc != expected:
            raise SourceError(
                f"{self._where} answered its first {self._index:,} items otherwise than when they were read before: "
                "going on after them would lose or repeat items (a source must answer a page the same way each time)"
            )

    async def _wait_to_retry(
        self, attempts: Attempts, exc: httpx.TransportError | _TransientError | BodyCutShortError
    ) -> None:
        """After a call that may succeed if tried again: waits within the time box, or gives up (SourceError)."""
        failure = (
            exc
            if isinstance(exc, _TransientError)
            else _TransientError(
                str(exc) if isinstance(exc, BodyCutShortError)
                else f"{self._where} failed: {type(exc).__name__}: {exc or 'no details'}"
            )
        )  # fmt: skip
        await self._time_box.within(attempts.wait(str(failure), retry_after=failure.retry_after))

    def _fetch_token(self) -> Awaitable[Token]:
        return fetch_token(self._source, self._timeout, self._retry, self._network)

    @asynccontextmanager
    async def _answer(
        self, url: str, params: dict[str, Any], *, renew: bool
    ) -> AsyncIterator[tuple[httpx.Response, AnswerBody]]:
        """The answer at `url`, streamed, with the source's token if it has one; an error status raises with
        the first SOURCE_MAX_ERROR_BYTES of it; a 401 to a token that may be renewed (`renew`) raises
        _RefusedTokenError."""
        # Merged by hand: httpx's params= would drop the query the URL already has.
        request = self._client.build_request("GET", httpx.URL(url).copy_merge_params(params))
        token = None
        if self._token is not None:
            token = await self._time_box.within(self._token.current(self._fetch_token))
            request.headers["Authorization"] = f"Bearer {token}"
        answer_by = time.monotonic() + self._limits.read_deadline
        try:
            response = await self._time_box.within(self._client.send(request, stream=True), answer_by)
        except TimeoutError:
            raise read_deadline_passed(self._where, self._limits) from None
        except httpx.ConnectError as exc:
            if (refused := _certificate_error(exc)) is not None:  # no retry makes a certificate trusted
                raise SourceError(
                    f"{self._where}: its certificate does not verify ({refused.verify_message}): trust its CA in the "
                    f"system store, or name a PEM file of it in {SSL_CERT_FILE.name}"
                ) from None
            raise
        try:
            max_bytes = self._limits.max_page_bytes if self.paged else None
            body = AnswerBody(response, self._where, self._limits, self._time_box, answer_by, max_bytes)
            if response.status_code == 401 and token is not None and renew:
                raise _RefusedTokenError(token)
            if not response.is_success:
                # redacted before they are cut: a secret the cut goes through would no longer be known whole
                excerpt = public_text((await body.head()).decode("utf-8", "replace"), _EXCERPT_CHARS)
                phrase = public_text(response.reason_phrase, _REASON_CHARS)
                reason = f"{self._where} answered {response.status_code} {phrase}: {excerpt}"
                if response.status_code == 401 and token is not None:
                    auth = f"{self._source.setting_name(SOURCE_AUTH)}={self._source.auth.mode}"
                    reason += f" (to a token renewed after a 401: check what {auth} signs in as)"
                if response.status_code in RETRYABLE_STATUS:
                    raise _TransientError(reason, retry_after_seconds(response.headers.get("Retry-After")))
                raise SourceError(reason)
            yield response, body
        finally:
            await response.aclose()


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate refusal behind a connect error (httpx raises it from httpcore's, raised from ssl's)."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, ssl.SSLCertVerificationError):
        seen = seen.__cause__ or seen.__context__
    return seen


def _crc(item: str, crc: int) -> int:
    """`crc` with one more item's text (and a line break: `1`, `23` is not `12`, `3`)."""
    return zlib.crc32(item.encode("utf-8") + b"\n", crc)
