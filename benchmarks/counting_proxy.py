"""A TCP proxy in front of Azurite that counts the HTTP requests passing through it, by method."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable

from testkit.loop_server import LoopServer, pipe

_REQUEST_LINE = re.compile(rb"(GET|PUT|POST|DELETE|HEAD|MERGE|PATCH|OPTIONS) /\S* HTTP/1\.1\r\n")


class CountingProxy(LoopServer):
    def __init__(self, target_port: int) -> None:
        super().__init__()
        self.target_port = target_port
        self.requests: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(pipe(reader, upstream_writer, self._counter()), pipe(upstream_reader, writer))

    def _counter(self) -> Callable[[bytes], None]:
        """Counts the request lines of one connection's reads (a line may straddle two reads)."""
        carried = b""

        def count(data: bytes) -> None:
            nonlocal carried
            window = carried + data
            found = (m for m in _REQUEST_LINE.finditer(window) if m.end() > len(carried))
            self.requests.update(match.group(1).decode() for match in found)
            carried = window[-300:]

        return count
