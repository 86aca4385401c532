"""The lean sender's connection pool against a loopback server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from putmessage import connection_pool
from putmessage.connection_pool import ConnectionPool
from putmessage.http_response import ProtocolError

REQUEST = b"POST /q/messages HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nhi"
OK = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
BUSY = b"HTTP/1.1 503 Server Busy\r\nx-ms-error-code: ServerBusy\r\nContent-Length: 4\r\n\r\nbusy"


@dataclass
class Server:
    """Counts connections, the most open at once, and requests (in all and per connection); `answer` answers each."""

    answer: Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: int = 0
    requests_per_connection: list[int] = field(default_factory=list)
    closed_by_client: list[bool] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        index = len(self.requests_per_connection)
        self.requests_per_connection.append(0)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                await reader.readexactly(2)
                self.requests += 1
                self.requests_per_connection[index] += 1
                await self.answer(self.requests, reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.append(True)
        finally:
            self.open_now -= 1
            writer.close()


async def serve(
    server: Server, client: Callable[[ConnectionPool], Awaitable[object]], size: int = 4, timeout: float = 30.0
) -> object:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    pool = ConnectionPool(f"http://127.0.0.1:{port}", size, timeout=timeout)
    try:
        return await client(pool)
    finally:
        pool.close()
        listener.close()
        await asyncio.sleep(0.05)  # let the server see the pool's connections close


async def answer_ok(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(OK)


def test_keep_alive_reuses_one_connection_for_requests_in_turn():
    server = Server(answer_ok)

    async def ten_in_turn(pool: ConnectionPool) -> list[int]:
        return [(await pool.request(REQUEST)).status for _ in range(10)]

    assert asyncio.run(serve(server, ten_in_turn)) == [201] * 10
    assert (server.connections, server.requests) == (1, 10)


def test_no_more_connections_than_the_pool_size():
    async def slow_ok(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.02)
        writer.write(OK)

    server = Server(slow_ok)

    async def forty_at_once(pool: ConnectionPool) -> list[int]:
        return [r.status for r in await asyncio.gather(*(pool.request(REQUEST) for _ in range(40)))]

    assert asyncio.run(serve(server, forty_at_once, size=3)) == [201] * 40
    assert server.most_open == 3


def test_a_connection_the_server_closed_after_answering_is_not_reused():
    async def ok_then_close(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK)
        await writer.drain()
        writer.close()  # no `Connection: close`: the pool learns it from the socket

    server = Server(ok_then_close)

    async def three_in_turn(pool: ConnectionPool) -> list[int]:
        statuses = []
        for _ in range(3):
            statuses.append((await pool.request(REQUEST)).status)
            await asyncio.sleep(0.05)
        return statuses

    assert asyncio.run(serve(server, three_in_turn)) == [201] * 3
    assert server.connections == 3


def test_an_idle_connection_is_retired_before_the_server_times_it_out(monkeypatch):
    monkeypatch.setattr(connection_pool, "MAX_IDLE_SECONDS", 0.1)
    server = Server(answer_ok)

    async def with_a_pause(pool: ConnectionPool) -> list[int]:
        first = await pool.request(REQUEST)
        await asyncio.sleep(0.2)
        return [first.status, (await pool.request(REQUEST)).status]

    assert asyncio.run(serve(server, with_a_pause)) == [201, 201]
    assert server.connections == 2


def test_a_connection_dropped_before_the_answer_raises_and_the_next_request_reconnects():
    async def drop_the_first(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if number == 1:
            writer.transport.abort()
        else:
            writer.write(OK)

    server = Server(drop_the_first)

    async def twice(pool: ConnectionPool) -> list[object]:
        outcomes: list[object] = []
        for _ in range(2):
            try:
                outcomes.append((await pool.request(REQUEST)).status)
            except OSError as exc:
                outcomes.append(type(exc))
        return outcomes

    outcomes = asyncio.run(serve(server, twice))
    assert outcomes[0] in (ConnectionResetError, ConnectionAbortedError)
    assert outcomes[1] == 201
    assert server.connections == 2


def test_a_request_that_times_out_closes_its_connection():
    async def never(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # no answer; returns when the client closes the connection

    server = Server(never)

    async def unanswered(pool: ConnectionPool) -> float:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"no answer within 0\.4 s"):
            await pool.request(REQUEST)
        return time.monotonic() - started

    waited = asyncio.run(serve(server, unanswered, timeout=0.4))
    assert 0.4 <= waited < 0.4 + 0.1 + 0.2  # the deadline, plus at most one watchdog tick (timeout / 4)
    assert server.closed_by_client == [True]


async def in_turn(pool: ConnectionPool, count: int, pause: float = 0.0) -> list[object]:
    """Each request's status, or the error it failed with."""
    outcomes: list[object] = []
    for _ in range(count):
        try:
            outcomes.append((await pool.request(REQUEST)).status)
        except (OSError, ProtocolError) as exc:
            outcomes.append(exc)
        await asyncio.sleep(pause)
    return outcomes


def test_a_stray_response_after_the_answer_is_never_taken_for_the_next_answer():
    async def ok_and_a_stray_ok_then_busy(
        number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(OK + OK if number == 1 else BUSY)  # the stray 201 in the same write as the answer

    server = Server(ok_and_a_stray_ok_then_busy)
    outcomes = asyncio.run(serve(server, lambda pool: in_turn(pool, 4)))
    assert outcomes[0] == 201
    assert all(outcome == 503 or isinstance(outcome, OSError) for outcome in outcomes[1:]), outcomes
    assert server.requests_per_connection[0] == 1  # the connection with bytes left over was closed


def test_bytes_that_arrive_while_no_request_is_waiting_close_the_connection():
    async def ok_then_a_stray_head(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if number > 1:
            writer.write(BUSY)
            return
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.02)  # the client has its answer and the connection is idle
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n")

    server = Server(ok_then_a_stray_head)
    outcomes = asyncio.run(serve(server, lambda pool: in_turn(pool, 3, pause=0.1)))
    assert outcomes[0] == 201
    assert all(outcome == 503 or isinstance(outcome, OSError) for outcome in outcomes[1:]), outcomes
    assert server.requests_per_connection[0] == 1
