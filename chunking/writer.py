"""Splits a stream of items into numbered chunk blobs, uploading while the source still streams."""

from __future__ import annotations

import asyncio
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import ContainerClient

from core.contract import COUNT_METADATA, ChunkRef, encode_chunk


class ChunkWriter:
    """Buffers one chunk; full chunks upload in the background, at most `concurrency` at once.

    Blobs are written with if-none-match: an existing chunk is never overwritten, since an
    overwrite would fire the blob trigger again.
    """

    def __init__(
        self, container: ContainerClient, run_id: str, chunk_size: int, concurrency: int, *, chunks: int = 0,
        messages: int = 0,
    ) -> None:  # fmt: skip
        self._container = container
        self._run_id = run_id
        self._chunk_size = chunk_size
        self._slots = asyncio.Semaphore(concurrency)
        self._uploads: set[asyncio.Task[None]] = set()
        self._buffer: list[Any] = []
        self.chunks = chunks  # written (or being written) so far: the next chunk's index
        self.messages = messages

    async def add(self, item: Any) -> None:
        self._buffer.append(item)
        if len(self._buffer) >= self._chunk_size:
            await self._flush()

    @property
    def at_chunk_boundary(self) -> bool:
        """True right after a chunk filled: stopping here keeps chunk numbering independent of when."""
        return not self._buffer

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
        items, self._buffer = self._buffer, []
        ref = ChunkRef(self._run_id, self.chunks)
        self.chunks += 1
        self.messages += len(items)
        await self._slots.acquire()
        for task in [task for task in self._uploads if task.done()]:
            self._uploads.discard(task)
            task.result()
        task = asyncio.create_task(self._upload(ref, encode_chunk(items), len(items)))
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
