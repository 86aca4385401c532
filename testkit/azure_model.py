"""An Azure Storage model in front of Azurite: Azure-like latency, Azure's throttling, broken connections.

A small HTTP/1.1 proxy on loopback (test and benchmark code only, never deployed). For every request it

- waits a latency drawn from a log-normal distribution (by default median 6 ms, p99 40 ms);
- charges the storage account's token bucket (every request) and, for Put Message, the queue's own
  bucket; an empty bucket answers `503` exactly as Azure Storage does past its scalability targets:
  status line, `x-ms-error-code: ServerBusy`, `x-ms-request-id`, `x-ms-version`, `Date`, and the XML
  `<Error><Code>ServerBusy</Code><Message>…\\nRequestId:…\\nTime:…</Message></Error>` body (with the
  byte order mark Azure puts in front of it). A queue over its target answers "The server is busy.",
  an account over its target "Operations per second is over the account limit.";
- can break Put Message connections on purpose: a TCP reset before the request reaches Azurite, a
  reset after Azurite stored the message (its answer is lost: the client must retry, and a duplicate
  results), or no answer at all (the client's timeout decides).

Azure's targets are 2,000 messages/s per queue and 20,000 requests/s per account; Azurite on this
machine takes ~1,500 Put Message/s in all. `ModelConfig.azure(scale)` runs Azure slowed down `scale`
times: every rate divided by `scale`, every latency multiplied by it, so what has no unit (sends in
flight needed to reach a limit, throughput as a fraction of a limit) is Azure's, at a rate Azurite keeps up with.

    model = AzureModel(ModelConfig.azure(scale=50), queue_port=azurite.queue_port, blob_port=azurite.blob_port)
    model.start()   # serves from a thread of its own; model.ports["queue"], model.stats["throttled_queue"] …
                    # (and per queue: model.stats["throttled_queue NAME"], ["reset_after NAME"] …)

It runs in a thread: benchmarks that measure a client's CPU run the client in a process of its own.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import formatdate
from typing import NamedTuple

AZURE_QUEUE_RATE = 2_000.0  # messages/s a queue takes (Azure's target)
AZURE_ACCOUNT_RATE = 20_000.0  # requests/s a storage account takes (40,000 in some regions)
QUEUE_BUSY = "The server is busy."
ACCOUNT_BUSY = "Operations per second is over the account limit."
_P99_Z = 2.3263478740408408  # the standard normal's 99th percentile
_MAX_HEAD = 64 * 1024
_UPSTREAM_IDLE_SECONDS = 4.0
_PUT_MESSAGE = re.compile(rb"^POST /[^/ ]+/([^/ ?]+)/messages[ ?]")


@dataclass(frozen=True)
class ModelConfig:
    median_ms: float = 6.0
    p99_ms: float = 40.0
    queue_rate: float = AZURE_QUEUE_RATE  # Put Message per second per queue; math.inf: no limit
    account_rate: float = AZURE_ACCOUNT_RATE  # requests per second over the whole account
    queue_burst: float | None = None  # bucket size in messages; None: a tenth of a second's rate
    account_burst: float | None = None
    reset_rate: float = 0.0  # fraction of Put Message requests reset, half before and half after Azurite answers
    drop_rate: float = 0.0  # fraction of Put Message requests never answered
    gateway_rate: float = 0.0  # fraction of Put Message requests answered 500, 502 or 504 without storing them
    seed: int = 13

    @classmethod
    def azure(cls, scale: float = 1.0, **overrides: float) -> ModelConfig:
        """Azure's targets and latency, slowed down `scale` times (rates / scale, latencies x scale)."""
        model = cls(median_ms=6.0 * scale, p99_ms=40.0 * scale, queue_rate=AZURE_QUEUE_RATE / scale,
                    account_rate=AZURE_ACCOUNT_RATE / scale)  # fmt: skip
        return replace(model, **overrides)  # type: ignore[arg-type]


class TokenBucket:
    """`rate` tokens a second, at most `capacity` saved up; a request takes one or is refused."""

    def __init__(self, rate: float, capacity: float | None) -> None:
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate / 10)
        self._tokens = self.capacity
        self._at = time.monotonic()

    def ready(self) -> bool:
        """Whether a token is there now (`take` it to use it)."""
        if self.rate == math.inf:
            return True
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens >= 1.0

    def take(self) -> None:
        self._tokens -= 1.0


class Latency:
    """Log-normal with the given median and 99th percentile, in seconds."""

    def __init__(self, median_ms: float, p99_ms: float, rng: random.Random) -> None:
        self._mu = math.log(max(median_ms, 1e-6) / 1000)
        self._sigma = max(0.0, math.log(max(p99_ms, median_ms, 1e-6) / max(median_ms, 1e-6))) / _P99_Z
        self._rng = rng
        self.zero = median_ms <= 0

    def sample(self) -> float:
        return 0.0 if self.zero else self._rng.lognormvariate(self._mu, self._sigma)


class Request(NamedTuple):
    raw: bytes
    method: bytes
    queue: str | None  # the queue of a Put Message
    version: str
    client_request_id: str | None


def server_busy(message: str, service: str, request: Request) -> bytes:
    """Azure Storage's answer past a scalability target, byte for byte in shape."""
    return storage_error(503, "ServerBusy", message, service, request)


GATEWAY_ANSWERS = ((500, "InternalError", "Server encountered an internal error. Please try again after some time."),
                   (502, "BadGateway", "The gateway did not receive a response in time."),
                   (504, "GatewayTimeout", "The gateway timed out."))  # fmt: skip


def storage_error(status: int, code: str, message: str, service: str, request: Request) -> bytes:
    """An Azure Storage error answer, byte for byte in shape."""
    request_id = str(uuid.uuid4())
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"  # Azure writes 7 fraction digits
    body = (
        f'\ufeff<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}\nRequestId:{request_id}\nTime:{when}</Message></Error>"
    ).encode()
    client_id = f"x-ms-client-request-id: {request.client_request_id}\r\n" if request.client_request_id else ""
    head = (
        f"HTTP/1.1 {status} {message}\r\nContent-Length: {len(body)}\r\nContent-Type: application/xml\r\n"
        f"Server: Windows-Azure-{service.title()}/1.0 Microsoft-HTTPAPI/2.0\r\nx-ms-request-id: {request_id}\r\n"
        f"x-ms-version: {request.version}\r\n{client_id}x-ms-error-code: {code}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n\r\n"
    )
    return head.encode() + body


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One whole request (Content-Length or chunked body), or None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    headers = _headers(head)
    body = await _read_body(reader, headers, none=False)
    match = _PUT_MESSAGE.match(head)
    method = head.split(b" ", 1)[0]
    return Request(
        head + body, method, match.group(1).decode() if match else None,
        headers.get(b"x-ms-version", b"2026-10-06").decode("latin-1"),
        headers[b"x-ms-client-request-id"].decode("latin-1") if b"x-ms-client-request-id" in headers else None,
    )  # fmt: skip


async def read_response(reader: asyncio.StreamReader, method: bytes) -> tuple[bytes, bool]:
    """One whole response to a request made with `method`, and whether the connection stays open."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        if status >= 200 or status == 101:
            break
    headers = _headers(head)
    no_body = method == b"HEAD" or status in (204, 304)
    keep_alive = headers.get(b"connection", b"").lower() != b"close"
    if no_body:
        return head, keep_alive
    if b"content-length" not in headers and b"transfer-encoding" not in headers:
        return head + await reader.read(), False  # the close ends the body
    return head + await _read_body(reader, headers, none=True), keep_alive


async def _read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes], none: bool) -> bytes:
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        parts = []
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0], 16)
            parts.append(line)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    parts.append(trailer)
                parts.append(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size + 2))
    length = int(headers.get(b"content-length", b"0"))
    return await reader.readexactly(length) if length else b""


def _headers(head: bytes) -> dict[bytes, bytes]:
    if len(head) > _MAX_HEAD:
        raise ValueError("request head too long")
    fields = (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
    return {name.strip().lower(): value.strip() for name, _, value in fields}


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes with a TCP RST (SO_LINGER 0), as a load balancer dropping a connection does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class AzureModel:
    """One storage account: a proxy for its queue service and, optionally, its blob service."""

    def __init__(self, config: ModelConfig, *, queue_port: int, blob_port: int | None = None) -> None:
        self.stats: Counter[str] = Counter()
        self.stored_at: list[float] = []  # monotonic instants at which Put Messages reached Azurite
        self._targets = {"queue": queue_port, **({"blob": blob_port} if blob_port else {})}
        self.ports: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run_in_thread, daemon=True)
        self._servers: list[asyncio.Server] = []
        self.configure(config)

    def configure(self, config: ModelConfig) -> None:
        """New limits, latency and faults from now on (e.g. to lift a throttle); buckets start full."""
        self.config = config
        self._rng = random.Random(config.seed)
        self._latency = Latency(config.median_ms, config.p99_ms, self._rng)
        self._account = TokenBucket(config.account_rate, config.account_burst)
        self._queues: dict[str, TokenBucket] = {}

    def start(self) -> AzureModel:
        """Serves on loopback from a thread of its own; `ports` says where."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Azure model did not start")
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shut_down(), self._loop)
        self._thread.join(5)

    async def _shut_down(self) -> None:
        """Stops listening and ends every connection's handler while the loop still runs (a handler left
        pending is closed later, by the garbage collector, on a closed loop)."""
        for server in self._servers:
            server.close()
        handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        self._loop.stop()

    def connection_string(self, account: str, key: str) -> str:
        """A connection string whose endpoints are this model's (the blob one only if it fronts blobs)."""
        ends = {"queue": "QueueEndpoint", "blob": "BlobEndpoint"}
        endpoints = "".join(f"{ends[s]}=http://127.0.0.1:{port}/{account};" for s, port in self.ports.items())
        return f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};{endpoints}"

    async def serve(self) -> None:
        for service, target in self._targets.items():
            server = await asyncio.start_server(
                lambda r, w, s=service, t=target: self._client(r, w, s, t), "127.0.0.1", 0
            )
            self._servers.append(server)
            self.ports[service] = server.sockets[0].getsockname()[1]

    def _run_in_thread(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.serve())
        self._ready.set()
        self._loop.run_forever()

    def _fault(self, request: Request) -> str | None:
        if request.queue is None:
            return None
        draw = self._rng.random()
        if draw < self.config.drop_rate:
            return "dropped"
        if draw < self.config.drop_rate + self.config.reset_rate:
            return "reset_before" if self._rng.random() < 0.5 else "reset_after"
        if draw < self.config.drop_rate + self.config.reset_rate + self.config.gateway_rate:
            return "gateway"
        return None

    def _busy(self, request: Request) -> str | None:
        """Why the request is refused, or None when its queue and the account have room for it: a
        request is charged to both or to neither (one a queue refuses is not served)."""
        queue = None
        if request.queue is not None:
            queue = self._queues.get(request.queue)
            if queue is None:
                queue = self._queues[request.queue] = TokenBucket(self.config.queue_rate, self.config.queue_burst)
            if not queue.ready():
                self.stats["throttled_queue"] += 1
                self.stats[f"throttled_queue {request.queue}"] += 1
                return QUEUE_BUSY
        if not self._account.ready():
            self.stats["throttled_account"] += 1
            return ACCOUNT_BUSY
        self._account.take()
        if queue is not None:
            queue.take()
        return None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, service: str,
                      target: int) -> None:  # fmt: skip
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        upstream_used = 0.0
        try:
            while (request := await read_request(reader)) is not None:
                self.stats["requests"] += 1
                self.stats["put_messages"] += request.queue is not None
                self.stats[f"{service} {request.method.decode()}"] += 1  # requests by service and method
                await asyncio.sleep(self._latency.sample())
                if (busy := self._busy(request)) is not None:
                    writer.write(server_busy(busy, service, request))
                    await writer.drain()
                    continue
                fault = self._fault(request)
                if fault is not None:
                    self.stats[fault] += 1
                    self.stats[f"{fault} {request.queue}"] += 1  # a fault is drawn for Put Message only
                if fault == "dropped":
                    await reader.read()  # no answer: hold the connection until the client gives up
                    return
                if fault == "reset_before":
                    _reset(writer)
                    return
                if fault == "gateway":  # answered in front of storage: nothing stored
                    writer.write(storage_error(*self._rng.choice(GATEWAY_ANSWERS), service, request))
                    await writer.drain()
                    continue
                if upstream is not None and time.monotonic() - upstream_used > _UPSTREAM_IDLE_SECONDS:
                    upstream[1].close()  # Azurite (Node) closes a connection idle for 5 s: never write into that
                    upstream = None
                if upstream is None:
                    upstream = await asyncio.open_connection("127.0.0.1", target)
                upstream[1].write(request.raw)
                if request.queue is not None:
                    self.stored_at.append(time.monotonic())
                answer, keep_alive = await read_response(upstream[0], request.method)
                upstream_used = time.monotonic()
                if fault == "reset_after":  # stored, but the client never hears so
                    _reset(writer)
                    return
                writer.write(answer)
                await writer.drain()
                if not keep_alive:
                    return
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.stats["broken_connections"] += 1
        finally:
            if upstream is not None:
                upstream[1].close()
            writer.close()
