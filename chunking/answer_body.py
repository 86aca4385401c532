"""A source's answer body as it arrives: each read bounded in time, its Content-Encoding undone piece by
piece (`chunking/content_decoding.py`), its size, nesting and UTF-8 checked, its items found as the
source wrote them (`core/json_items.py`). Memory is bounded by the largest item, not by the answer.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Iterator

import httpx

from chunking.content_decoding import ContentDecoder, CutShortError
from chunking.json_depth import NestingGuard
from chunking.time_box import TimeBox
from core.errors import SourceError
from core.json_items import JsonItems, JsonItemsError
from core.settings import SOURCE_MAX_DEPTH, SOURCE_MAX_PAGE_BYTES, SOURCE_READ_DEADLINE, SourceLimits


def read_deadline_passed(where: str, limits: SourceLimits) -> SourceError:
    return SourceError(
        f"{where} did not finish answering within {SOURCE_READ_DEADLINE.name}={limits.read_deadline:g} s"
    )


class BodyCutShortError(Exception):
    """The answer ended before its content did: worth reading again."""


class AnswerBody:
    """`answer_by`: the `time.monotonic()` instant the whole answer must have arrived by (SOURCE_READ_DEADLINE);
    `max_bytes`: the most it may take decompressed (None: no bound but its items')."""

    def __init__(
        self, response: httpx.Response, where: str, limits: SourceLimits, time_box: TimeBox, answer_by: float,
        max_bytes: int | None = None,
    ) -> None:  # fmt: skip
        self._response = response
        self._where = where
        self._limits = limits
        self._time_box = time_box
        self._answer_by = answer_by
        self._max_bytes = max_bytes
        self._raw = response.aiter_raw()
        self._decoder = ContentDecoder(response.headers.get("Content-Encoding"), where)
        self._pieces: Iterator[bytes] = iter(())
        self._ended = False
        self._size = 0

    async def items(self, scanner: JsonItems) -> AsyncIterator[tuple[list[str], bool]]:
        """The items each read completes, in order, as `scanner` finds them, and whether the answer has
        ended: a read's items are held until a later read brings more, so that the last batch says so
        (and `scanner` then holds its captures). BodyCutShortError when it ended before its JSON did."""
        nesting = NestingGuard(
            self._limits.max_depth,
            f"{self._where} nests arrays and objects deeper than {SOURCE_MAX_DEPTH.name}={self._limits.max_depth}",
        )
        text = codecs.getincrementaldecoder("utf-8-sig")()
        read = 0
        held: list[str] = []
        try:
            while True:
                part = await self._next()
                nesting.feed(part)
                try:
                    found = scanner.feed(text.decode(part, final=not part))
                except JsonItemsError:
                    if held:  # what came before the fault is given, then the fault
                        yield held, False
                    raise
                except UnicodeDecodeError as exc:
                    if not part:  # the answer ended inside a character
                        raise BodyCutShortError(f"{self._where} answered a body cut short mid-character") from None
                    raise SourceError(
                        f"{self._where} answered bytes that are not UTF-8 at byte {read + exc.start:,}"
                    ) from None
                if not part:
                    found += scanner.end()
                if scanner.error is not None:  # `found` holds the items before the fault: given, then the fault
                    if held or found:
                        yield held + found, False
                    raise scanner.error
                if not part:
                    yield held + found, True
                    return
                read += len(part)
                if found:  # the items held are not the answer's last: give them
                    if held:
                        yield held, False
                    held = found
        except JsonItemsError as exc:
            if exc.cut_short:
                raise BodyCutShortError(f"{self._where} answered a body cut short: {exc}") from None
            raise SourceError(f"{self._where}: {exc}") from None

    async def head(self) -> bytes:
        """An error answer's first SOURCE_MAX_ERROR_BYTES; the rest is never read."""
        parts: list[bytes] = []
        size = 0
        while size < self._limits.max_error_bytes and (part := await self._next()):
            parts.append(part)
            size += len(part)
        return b"".join(parts)[: self._limits.max_error_bytes]

    async def _next(self) -> bytes:
        """The next decoded bytes (at most a piece); b"" at the end."""
        while (piece := next(self._pieces, None)) is None:
            if self._ended:
                return b""
            raw = await self._read()
            if raw:
                self._pieces = self._decoder.feed(raw)
                continue
            self._ended = True
            try:
                self._pieces = self._decoder.finish()
            except CutShortError as exc:
                raise BodyCutShortError(f"{self._where} answered a body cut short: {exc}") from None
        self._size += len(piece)
        if self._max_bytes is not None and self._size > self._max_bytes:
            raise SourceError(
                f"{self._where} answered a page of more than {SOURCE_MAX_PAGE_BYTES.name}={self._max_bytes} "
                "bytes (decompressed); ask for smaller pages or raise it"
            )
        return piece

    async def _read(self) -> bytes:
        """The next raw bytes of the body; b"" at its end."""
        try:
            return await self._time_box.within(anext(self._raw, b""), self._answer_by)
        except TimeoutError:
            raise read_deadline_passed(self._where, self._limits) from None
