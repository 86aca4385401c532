"""Splits a stream of items into numbered chunk blobs, uploading while the source still streams."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import ContainerClient

from core.contract import COUNT_METADATA, ChunkRef, encode_chunk
from core.errors import SourceError
from core.settings import CHUNK_MAX_BYTES


class ChunkWriter:
    """Buffers one chunk; full chunks upload in the background, at most `concurrency` at once.

    A chunk closes at `chunk_size` items, or early, before the item that would take it past `max_bytes`.
    Sizes are bounded cheaply (a string's line takes at most 6 bytes a character and 3 more) until the
    bound nears `max_bytes`; from there the chunk's lines are measured. Blobs are written with
    if-none-match: an existing chunk is never overwritten, since an overwrite would fire the blob
    trigger again.
    """

    def __init__(
        self, container: ContainerClient, run_id: str, chunk_size: int, concurrency: int, *, chunks: int = 0,
        messages: int = 0, max_bytes: int,
    ) -> None:  # fmt: skip
        self._container = container
        self._run_id = run_id
        self.chunk_size = chunk_size
        self._max_bytes = max_bytes
        self._slots = asyncio.Semaphore(concurrency)
        self._uploads: set[asyncio.Task[None]] = set()
        self._buffer: list[Any] = []
        self._bound = 0  # at least the buffer's bytes
        self._lines: list[bytes] | None = None  # once measured: the buffer's chunk lines (the first may hold many)
        self._bytes = 0  # the lines' bytes
        self.chunks = chunks  # written (or being written) so far: the next chunk's index
        self.messages = messages

    async def add(self, item: Any) -> bool:
        """True when a chunk closed: before this item (it did not fit) or with it (`at_chunk_boundary`)."""
        if self._lines is None:
            bound = _line_bound(item)
            if bound is not None and self._bound + bound <= self._max_bytes:
                self._bound += bound
                self._buffer.append(item)
                return await self._flush_if_full()
            try:
                self._measure(_encoded(self._buffer))
            except SourceError:
                self.drop_partial()  # a chunk that cannot be written: closing must not try again
                raise
        line = _line(item)
        if len(line) > self._max_bytes:
            raise SourceError(
                f"an item of {len(line):,} bytes does not fit in a chunk of {CHUNK_MAX_BYTES.name}={self._max_bytes}"
            )
        closed = self._bytes + len(line) > self._max_bytes
        if closed:
            await self._flush()
        self._buffer.append(item)
        self._measure(line)
        return await self._flush_if_full() or closed

    @property
    def at_chunk_boundary(self) -> bool:
        """True right after a chunk filled: stopping here keeps chunk numbering independent of when."""
        return not self._buffer

    def drop_partial(self) -> None:
        """Forgets the items of the chunk not yet full: the next invocation reads them again."""
        self._buffer, self._bound, self._lines, self._bytes = [], 0, None, 0

    def _measure(self, lines: bytes) -> None:
        """Keeps chunk lines already encoded (to measure them), so that the chunk is not encoded again."""
        if self._lines is None:
            self._lines = []
        self._lines.append(lines)
        self._bytes += len(lines)

    async def close(self) -> None:
        """Writes the last partial chunk and waits for every upload; raises the first upload error."""
        try:
            if self._buffer:
                await self._flush()
            await asyncio.gather(*self._uploads)
        finally:
            for task in self._uploads:
                task.cancel()

    async def _flush_if_full(self) -> bool:
        if len(self._buffer) < self.chunk_size:
            return False
        await self._flush()
        return True

    async def _flush(self) -> None:
        items, lines = self._buffer, self._lines
        self.drop_partial()
        data = b"".join(lines) if lines is not None else _encoded(items)
        ref = ChunkRef(self._run_id, self.chunks)
        self.chunks += 1
        self.messages += len(items)
        await self._slots.acquire()
        for task in [task for task in self._uploads if task.done()]:
            self._uploads.discard(task)
            task.result()
        task = asyncio.create_task(self._upload(ref, data, len(items)))
        self._uploads.add(task)

    async def _upload(self, ref: ChunkRef, data: bytes, count: int) -> None:
        try:
            await self._container.upload_blob(
                ref.blob_name, data, overwrite=False, metadata={COUNT_METADATA: str(count)}
            )
        except ResourceExistsError:
            pass  # written by an earlier attempt at this run; the trigger already has it
        finally:
            self._slots.release()


def _line_bound(item: Any) -> int | None:
    """At least the bytes of the item's line, cheaply: for a string or an integer; None for anything else."""
    if type(item) is str:
        return 6 * len(item) + 3  # \u00XX at worst, quotes, newline
    if type(item) is int:
        return item.bit_length() // 3 + 3  # digits, sign, newline
    return None


def _line(item: Any) -> bytes:
    return _encoded((item,))


def _encoded(items: list[Any] | tuple[Any]) -> bytes:
    """The items' chunk lines. A number with a fraction comes as a Decimal (the source parses numbers
    exactly, for integers' sake) and is written as a float, as JSON has it."""
    try:
        try:
            return encode_chunk(items)
        except TypeError:
            return encode_chunk(_floats(item) for item in items)
    except UnicodeEncodeError as exc:
        raise SourceError(f"an item holds text that UTF-8 cannot hold: {exc.object[exc.start : exc.end]!r}") from None


def _floats(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: _floats(element) for key, element in value.items()}
    if isinstance(value, list):
        return [_floats(element) for element in value]
    return value
