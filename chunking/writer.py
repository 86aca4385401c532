"""Splits a stream of items into numbered chunk blobs, uploading while the source still streams."""

from __future__ import annotations

import asyncio

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import ContainerClient

from core.contract import COUNT_METADATA, FIRST_METADATA, GENERATION_METADATA, ChunkRef
from core.errors import SourceError
from core.settings import CHUNK_MAX_BYTES


class ChunkConflictError(SourceError):
    """A chunk written before (by an earlier attempt at the run) holds other lines than this read made:
    the source answered otherwise when read again, or the run's chunks were cut another way."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


class ChunkWriter:
    """Buffers one chunk of item texts (each a chunk line); full chunks upload in the background, at most
    `concurrency` at once.

    A chunk closes at `chunk_size` items, or early, before the item that would take it past `max_bytes`.
    Blobs are written with if-none-match: an existing chunk is never overwritten, since an overwrite would
    fire the blob trigger again. `uploaded` is how many chunks from the first are known to be written.
    """

    def __init__(
        self, container: ContainerClient, run_id: str, generation: str, chunk_size: int, concurrency: int, *,
        chunks: int = 0, messages: int = 0, max_bytes: int,
    ) -> None:  # fmt: skip
        self._container = container
        self._run_id = run_id
        self._generation = generation
        self._metadata = {GENERATION_METADATA: generation} if generation else {}
        self.chunk_size = chunk_size
        self._max_bytes = max_bytes
        self._slots = asyncio.Semaphore(concurrency)
        self._uploads: set[asyncio.Task[None]] = set()
        self._buffer: list[bytes] = []  # the items' lines, UTF-8: a string of one astral character takes 4 bytes
        self._bytes = 0  # the buffer's lines' bytes           # a character in Python, 1-4 in UTF-8
        self.chunks = chunks  # written (or being written) so far: the next chunk's index
        self.messages = messages
        self._done: set[int] = set()  # chunks uploaded past `uploaded`
        self.uploaded = chunks

    async def add(self, item: str) -> bool:
        """True when a chunk closed: before this item (it did not fit) or with it (`at_chunk_boundary`)."""
        line = item.encode("utf-8")
        size = len(line) + 1
        if size > self._max_bytes:
            raise SourceError(
                f"an item of {size - 1:,} bytes does not fit in a chunk of {CHUNK_MAX_BYTES.name}={self._max_bytes}"
            )
        closed = self._bytes + size > self._max_bytes
        if closed:
            await self._flush()
        self._buffer.append(line)
        self._bytes += size
        if len(self._buffer) >= self.chunk_size:
            await self._flush()
            return True
        return closed

    @property
    def at_chunk_boundary(self) -> bool:
        """True right after a chunk filled: stopping here keeps chunk numbering independent of when."""
        return not self._buffer

    def drop_partial(self) -> None:
        """Forgets the items of the chunk not yet full: the next invocation reads them again."""
        self._buffer, self._bytes = [], 0

    async def close(self) -> None:
        """Writes the last partial chunk and waits for every upload; raises the first upload error."""
        try:
            if self._buffer:
                await self._flush()
            await asyncio.gather(*self._uploads)
        finally:
            for task in self._uploads:
                task.cancel()

    async def _flush(self) -> None:
        items = self._buffer
        self.drop_partial()
        data = b"\n".join(items) + b"\n"
        ref = ChunkRef(self._run_id, self.chunks)
        first = self.messages
        self.chunks += 1
        self.messages += len(items)
        await self._slots.acquire()
        for task in [task for task in self._uploads if task.done()]:
            self._uploads.discard(task)
            if task.exception() is not None:  # the first upload that failed ends the others
                for other in self._uploads:
                    other.cancel()
                task.result()
        task = asyncio.create_task(self._upload(ref, data, len(items), first))
        self._uploads.add(task)

    async def _upload(self, ref: ChunkRef, data: bytes, count: int, first: int) -> None:
        """Writes the chunk once; one written before (by an earlier attempt at the run) must hold the same
        lines, else the source answered otherwise when read again and going on would lose or repeat items.
        One an earlier run with this run_id left (a purge cut short) is replaced, as it was read."""
        metadata = {**self._metadata, COUNT_METADATA: str(count), FIRST_METADATA: str(first)}
        try:
            await self._container.upload_blob(ref.blob_name, data, overwrite=False, metadata=metadata)
        except ResourceExistsError:
            download = await self._container.download_blob(ref.blob_name)
            written = await download.readall()
            generation = (download.properties.metadata or {}).get(GENERATION_METADATA)
            if self._generation and generation != self._generation:
                await self._container.upload_blob(
                    ref.blob_name, data, overwrite=True, metadata=metadata, etag=download.properties.etag,
                    match_condition=MatchConditions.IfNotModified,
                )  # fmt: skip
            elif written != data:
                raise ChunkConflictError(
                    f"chunk {ref.blob_name} was written before with other items: the source answered otherwise when "
                    "it was read again (a source must answer a page the same way each time); the run stops before "
                    "that chunk",
                    ref.index,
                ) from None
        finally:
            self._slots.release()
        self._done.add(ref.index)
        while self.uploaded in self._done:
            self._done.discard(self.uploaded)
            self.uploaded += 1
