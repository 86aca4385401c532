"""Keep-alive HTTP/1.1 connections to one storage endpoint, one request at a time on each.

This is the lean sender's transport: an asyncio protocol that writes a prebuilt request and parses
the answer with `ResponseParser`, a few microseconds of Python per request where a general client
(aiohttp's request machinery, the SDK's pipeline) spends hundreds. A connection that receives bytes
after an answer, or bytes no request asked for, is closed: they are never read as the next answer.
TLS comes from the `ssl` context it is given (the process's one trust store, core/network.py). Given a
proxy (core/proxy.py), an https endpoint is reached through a CONNECT tunnel, one per connection and kept
as long as the connection (its `Proxy-Authorization` in the CONNECT only), and an http endpoint by
requests in absolute form, each carrying `Proxy-Authorization`: the sender builds them with `target_prefix`
and `proxy_header`. A proxy that refuses a CONNECT fails that connection as a broken one (ConnectionError).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from urllib.parse import urlsplit

from core.proxy import Proxy, host_and_port
from putmessage.http_response import ProtocolError, Response, ResponseParser

# Servers close idle keep-alive connections (Node, and so Azurite, after 5 s); never reuse one that
# has idled this long, so a request is not written into a connection the server is closing.
MAX_IDLE_SECONDS = 4.0
_MAX_CONNECT_ANSWER = 16_384  # bytes of a proxy's answer to CONNECT, its head (it has no body)
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*")


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = ResponseParser()
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[Response] | None = None
        self.closed = False
        self.idle_since = 0.0
        self.deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # bytes no request asked for: never let them be read as the next answer
            return
        try:
            response = self._parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            return
        if response is not None:
            self._answer_with(response)

    def eof_received(self) -> bool:
        response = self._parser.end_of_stream()
        if response is not None:
            self._answer_with(response)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection before answering"))

    async def exchange(self, request: bytes) -> Response:
        assert self._transport is not None
        self._answer = self._loop.create_future()
        self._transport.write(request)
        return await self._answer

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _answer_with(self, response: Response) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(response)
        if not response.keep_alive or self._parser.pending:
            self.close()  # pending: bytes came after the answer, and they are no answer to anything

    def expire(self, timeout: float) -> None:
        self._fail(TimeoutError(f"no answer within {timeout:g} s"))

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()


def _accepted(head: bytes) -> bool:
    """A proxy's answer to CONNECT opens the tunnel: a 2xx status line."""
    status = _STATUS_LINE.match(head)
    return status is not None and status.group(1)[:1] == b"2"


class _Tunnel(asyncio.Protocol):
    """A connection to a proxy until it answers CONNECT: the head of its answer, and nothing after it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answer: asyncio.Future[bytes] = loop.create_future()
        self._head = b""

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        self._head += data
        head, end, rest = self._head.partition(b"\r\n\r\n")
        if end and rest and _accepted(head):  # nothing may come before the server's TLS answers the client's hello
            self.answer.set_exception(ProtocolError("the proxy sent bytes after its answer to CONNECT"))
        elif end:  # a refusal's body (a proxy's HTML page) is not read: its status says it all
            self.answer.set_result(head)
        elif len(self._head) > _MAX_CONNECT_ANSWER:
            too_long = f"the proxy's answer to CONNECT is over {_MAX_CONNECT_ANSWER} bytes"
            self.answer.set_exception(ProtocolError(too_long))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc or ConnectionResetError("the proxy closed the connection before answering"))


class ConnectionPool:
    """At most `size` connections to the endpoint of `url` (http or https).

    A request with no answer after `timeout` seconds fails with TimeoutError and its connection is
    closed. One watchdog timer checks the requests in flight every `timeout / 4` seconds (at most
    1 s), instead of a timer per request: that timer cost as much CPU as parsing the answer.
    """

    def __init__(
        self, url: str, size: int, tls: ssl.SSLContext | None = None, timeout: float = 30.0, proxy: Proxy | None = None
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        self.host_header = parts.netloc.rpartition("@")[2]
        self._ssl = (tls or ssl.create_default_context()) if self._tls else None
        self._proxy = proxy
        self._dial = (proxy.host, proxy.port) if proxy else (self.host, self._port)
        forward = proxy if not self._tls else None  # an http endpoint through a proxy: absolute form, no tunnel
        self.target_prefix = f"http://{self.host_header}" if forward else ""  # before each request's path
        auth = forward.authorization if forward else ""
        self.proxy_header = f"Proxy-Authorization: {auth}\r\n" if auth else ""
        self.timeout = timeout  # seconds a request, or anything a sender does for one, may take
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    async def request(self, request: bytes) -> Response:
        """Sends one whole request and returns the answer; a connection that fails is dropped."""
        async with self._slots:
            connection = self._idle_connection() or await self._connect()
            connection.deadline = self._loop.time() + self.timeout  # type: ignore[union-attr]
            self._busy.add(connection)
            try:
                response = await connection.exchange(request)
            except BaseException:
                connection.close()
                raise
            finally:
                self._busy.discard(connection)
            if not connection.closed:
                connection.idle_since = self._loop.time()  # type: ignore[union-attr]
                self._idle.append(connection)
            return response

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._idle:
            self._idle.pop().close()

    def _idle_connection(self) -> _Connection | None:
        now = self._loop.time() if self._loop else 0.0
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < MAX_IDLE_SECONDS:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        self._loop = loop = asyncio.get_running_loop()
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._tick, self._expire_overdue)
        async with asyncio.timeout(self.timeout):
            if self._proxy is not None and self._tls:
                return await self._tunnel(loop, self._proxy)
            _, connection = await loop.create_connection(
                lambda: _Connection(loop),
                *self._dial,
                ssl=self._ssl,
                server_hostname=self.host if self._tls else None,
            )
        return connection

    async def _tunnel(self, loop: asyncio.AbstractEventLoop, proxy: Proxy) -> _Connection:
        """A connection through a CONNECT tunnel to the endpoint, TLS inside it."""
        transport, tunnel = await loop.create_connection(lambda: _Tunnel(loop), *self._dial)
        try:
            authority = host_and_port(self.host, self._port)
            auth = f"Proxy-Authorization: {proxy.authorization}\r\n" if proxy.authorization else ""
            transport.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n".encode())
            head = await tunnel.answer
            if not _accepted(head):
                line = head.partition(b"\r\n")[0][:100].decode("latin-1")
                raise ConnectionRefusedError(f"{proxy} answered {line!r} to CONNECT {authority}")
            connection = _Connection(loop)
            secure = await loop.start_tls(transport, connection, self._ssl, server_hostname=self.host)  # type: ignore[arg-type]
        except BaseException:
            transport.close()
            raise
        assert secure is not None  # None only for a transport that is closing, which start_tls refuses first
        connection.connection_made(secure)  # start_tls hands the protocol its transport without telling it
        return connection

    @property
    def _tick(self) -> float:
        return min(1.0, self.timeout / 4)

    def _expire_overdue(self) -> None:
        now = self._loop.time()  # type: ignore[union-attr]
        for connection in [connection for connection in self._busy if connection.deadline <= now]:
            connection.expire(self.timeout)
        self._watchdog = self._loop.call_later(self._tick, self._expire_overdue)  # type: ignore[union-attr]
