"""A source's answer body as it arrives: each read bounded in time, its nesting and its size checked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import ijson

from chunking.items_path import ijson_prefix
from chunking.json_depth import NestingGuard
from chunking.time_box import TimeBox
from core.errors import SourceError
from core.settings import CHUNK_MAX_BYTES, SOURCE_MAX_DEPTH, SOURCE_MAX_PAGE_BYTES, SOURCE_READ_DEADLINE, SourceLimits


def read_deadline_passed(where: str, limits: SourceLimits) -> SourceError:
    return SourceError(
        f"{where} did not finish answering within {SOURCE_READ_DEADLINE.name}={limits.read_deadline:g} s"
    )


class AnswerBody:
    """`answer_by`: the `time.monotonic()` instant the whole answer must have arrived by (SOURCE_READ_DEADLINE)."""

    def __init__(
        self, response: httpx.Response, where: str, limits: SourceLimits, time_box: TimeBox, answer_by: float
    ) -> None:
        self._response = response
        self._parts = response.aiter_bytes()
        self._where = where
        self._limits = limits
        self._time_box = time_box
        self._answer_by = answer_by
        self._nesting = NestingGuard(
            limits.max_depth, f"{where} nests arrays and objects deeper than {SOURCE_MAX_DEPTH.name}={limits.max_depth}"
        )

    async def whole(self) -> bytes:
        """A page: all of it, up to SOURCE_MAX_PAGE_BYTES decompressed."""
        parts: list[bytes] = []
        size = 0
        while part := await self._next():
            size += len(part)
            if size > self._limits.max_page_bytes:
                raise SourceError(
                    f"{self._where} answered a page of more than {SOURCE_MAX_PAGE_BYTES.name}="
                    f"{self._limits.max_page_bytes} bytes (decompressed); ask for smaller pages or raise it"
                )
            self._nesting.feed(part)
            parts.append(part)
        return b"".join(parts)

    async def head(self) -> bytes:
        """An error answer's first SOURCE_MAX_ERROR_BYTES; the rest is never read."""
        parts: list[bytes] = []
        size = 0
        while size < self._limits.max_error_bytes and (part := await self._next()):
            parts.append(part)
            size += len(part)
        return b"".join(parts)[: self._limits.max_error_bytes]

    async def json_part(self) -> bytes:
        """The next bytes of a JSON answer, its nesting checked; b"" at the end."""
        part = await self._next()
        self._nesting.feed(part)
        return part

    async def _next(self) -> bytes:
        """The next bytes, decompressed; b"" at the end."""
        try:
            return await self._time_box.within(anext(self._parts, b""), self._answer_by)
        except TimeoutError:
            raise read_deadline_passed(self._where, self._limits) from None
        except httpx.DecodingError as exc:
            encoding = self._response.headers.get("Content-Encoding", "none")
            raise SourceError(
                f"{self._where} answered a body that does not decode (Content-Encoding: {encoding}): {exc}"
            ) from None


class StreamedItems:
    """One unpaged answer's items, parsed as its bytes arrive (pushed to ijson, so that a read cut short
    by the time box unwinds as any await does). Refuses a body that does not start as the items path
    says, and one that goes on past CHUNK_MAX_BYTES without completing an item."""

    def __init__(self, body: AnswerBody, where: str, items_path: str, max_item_bytes: int) -> None:
        self._body = body
        self._where = where
        self._items_path = items_path
        self._max_item_bytes = max_item_bytes

    async def batches(self) -> AsyncIterator[list[Any]]:
        """The items each read completes, in order; ijson.JSONError for a body that is not JSON."""
        found = ijson.sendable_list()
        # use_float=False: integers of any size stay exact (with floats the C backend overflows past int64)
        parser = ijson.items_coro(found, ijson_prefix(self._items_path), use_float=False)
        unclaimed = 0  # bytes read since the last read that completed an item
        expected = b"[" if not self._items_path else b"{"
        started = False
        while part := await self._body.json_part():
            if not started and part.strip():
                started = True
                head = part.lstrip()
                if not head.startswith(expected):
                    shape = "a JSON array" if expected == b"[" else "a JSON object"
                    raise SourceError(f"{self._where} must answer {shape}, got {head[:60]!r}")
            parser.send(part)
            if found:
                yield found
                del found[:]
                unclaimed = 0
                continue
            unclaimed += len(part)
            if unclaimed > self._max_item_bytes:
                raise SourceError(
                    f"{self._where} sent {unclaimed:,} bytes without a whole item: an item may take at most "
                    f"{CHUNK_MAX_BYTES.name}={self._max_item_bytes}"
                )
        parser.close()
        if found:
            yield found
