"""The bundled external API: deterministic IDs over HTTP, with fault modes for tests and demos.

`GET /ids` answers `count` IDs (`?count=N` overrides the server's default), in one of the shapes a
real API takes:

- `none`: one JSON array, streamed in HTTP/1.1 chunked encoding so a million IDs never sit in memory;
- `next-link`: `{"data": [...], "links": {"self": …, "next": "/ids?page_token=…"}}`, and the same link
  as an RFC 8288 `Link: <…>; rel="next"` header;
- `cursor`: `{"items": [...], "next_cursor": "…"}` (null on the last page), sent back as `?cursor=`;
- `page`: `{"data": [...]}` for `?page=P&per_page=S` (from 1), an empty page after the last.

Every body streams, pages too, so a page of any size never sits in memory. With `objects` the items
are `{"id": "<id>", "seq": n}` instead of the bare ID strings; with `item_bytes` each ID is padded
to that many characters. An API that ignores a misnamed cursor or page parameter answers the first
page again: this one reads only `cursor`, `page`, `per_page` and `page_token`. With `authorize`, a request
whose `Authorization` header it refuses is answered 401, the body echoing that header (as careless APIs do).
"""

from __future__ import annotations

import base64
import itertools
import json
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_MIX = 0x9E3779B97F4A7C15F39CC0605CEDC835
_MASK = (1 << 128) - 1
_PIECE = 1_000
_FILL = 1 << 20  # bytes of filler generated at a time (error bodies, gzip bombs)


def demo_id(index: int) -> str:
    """The index-th ID: a stable, UUID-shaped string."""
    h = f"{(index * _MIX) & _MASK:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UNMIX = pow(_MIX, -1, 1 << 128)


def demo_index(text: str) -> int | None:
    """The index whose `demo_id` is `text`, or None for any other text."""
    digits = text.replace("-", "")
    if len(digits) != 32 or len(text) != 36:
        return None
    try:
        index = (int(digits, 16) * _UNMIX) & _MASK
    except ValueError:
        return None
    return index if demo_id(index) == text else None


def demo_ids(count: int) -> list[str]:
    return [demo_id(index) for index in range(count)]


@dataclass(frozen=True)
class Faults:
    """What the first and then every `every`-th request gets wrong: an error status (with Retry-After
    and an error body of `error_body` bytes), a slow answer, a body cut short, HTML instead of JSON, a
    body that trickles (`trickle` seconds between its bytes), items nested `nested` arrays deep, or a
    gzip body that inflates to `gzip_bomb` bytes. The other requests are answered correctly."""

    every: int = 1
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    truncate: bool = False
    non_json: bool = False
    foreign_next: bool = False  # next links point to another host
    trickle: float = 0.0
    nested: int = 0
    gzip_bomb: int = 0
    error_body: int = 0


PAGINATIONS = ("none", "next-link", "cursor", "page")


class DemoApi:
    def __init__(
        self, count: int = 100_000, port: int = 0, faults: Faults = Faults(), *, pagination: str = "none",
        page_size: int = 1000, objects: bool = False, item_bytes: int = 0,
        authorize: Callable[[str | None], bool] | None = None,
    ) -> None:  # fmt: skip
        self.count = count
        self.authorize = authorize
        self.faults = faults
        self.pagination = pagination
        self.page_size = page_size
        self.objects = objects
        self.item_bytes = item_bytes
        self.requests = 0
        self._lock = threading.Lock()
        self._bombs: dict[int, bytes] = {}
        self._server = _Server(("127.0.0.1", port), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/ids"

    def start(self) -> DemoApi:
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-api", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next_request_number(self) -> int:
        with self._lock:
            self.requests += 1
            return self.requests

    def item(self, index: int) -> str | dict[str, object]:
        text = demo_id(index)
        if self.item_bytes > len(text):
            text = f"{text}-{'x' * (self.item_bytes - len(text) - 1)}"
        return {"id": text, "seq": index} if self.objects else text

    def items(self, start: int, end: int, faults: Faults) -> Iterator[bytes]:
        """The items from `start` to `end` as the pieces of a JSON array's inside."""
        if faults.nested:
            yield b"[" * faults.nested + b"]" * faults.nested
            return
        for first in range(start, end, _PIECE):
            items = (json.dumps(self.item(i)) for i in range(first, min(first + _PIECE, end)))
            yield (b"," if first > start else b"") + ",".join(items).encode()

    def body(self, query: dict[str, list[str]], faults: Faults) -> tuple[Iterable[bytes], str | None]:
        """The answer's body as it streams, and its next link (next-link mode)."""
        count = int(query.get("count", [self.count])[0])
        if self.pagination == "none":
            return itertools.chain([b"["], self.items(0, count, faults), [b"]"]), None
        start, size = self._page_window(query)
        end = min(start + size, count)
        head, tail, link = self._page_envelope(start, end, count, faults.foreign_next)
        return itertools.chain([head], self.items(max(start, 0), end, faults), [tail]), link

    def gzip_bomb(self, size: int) -> bytes:
        """A gzip body that inflates to an empty array (an empty page) padded to `size` bytes with whitespace."""
        with self._lock:
            if size not in self._bombs:
                head, tail = (b"[", b"]") if self.pagination == "none" else self._page_envelope(0, 0, 0, False)[:2]
                packer = zlib.compressobj(9, zlib.DEFLATED, 31)
                parts = [packer.compress(head)]
                parts += [packer.compress(b" " * min(_FILL, size - done)) for done in range(0, size, _FILL)]
                self._bombs[size] = b"".join([*parts, packer.compress(tail), packer.flush()])
            return self._bombs[size]

    def _page_window(self, query: dict[str, list[str]]) -> tuple[int, int]:
        size = self.page_size
        if self.pagination == "page":
            size = int(query.get("per_page", [size])[0])
            return (int(query.get("page", ["1"])[0]) - 1) * size, size
        if self.pagination == "cursor":
            cursor = query.get("cursor", [""])[0]
            return (int(base64.urlsafe_b64decode(cursor)) if cursor else 0), size
        return int(query.get("page_token", ["0"])[0]), size

    def _page_envelope(self, start: int, end: int, count: int, foreign_next: bool) -> tuple[bytes, bytes, str | None]:
        """A page's JSON before and after its items, and its next link (next-link mode)."""
        if self.pagination == "page":
            return b'{"data": [', b"]}", None
        if self.pagination == "cursor":
            next_cursor = base64.urlsafe_b64encode(str(end).encode()).decode() if end < count else None
            return b'{"items": [', b'], "next_cursor": ' + json.dumps(next_cursor).encode() + b"}", None
        host = f"http://127.0.0.2:{self._server.server_address[1]}" if foreign_next else ""
        link = f"{host}/ids?page_token={end}&count={count}" if end < count else None
        links = {"self": f"/ids?page_token={start}&count={count}", "next": link}
        return b'{"data": [', b"], " + json.dumps({"links": links}).encode()[1:], link


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hangs up is no error here
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def error_body(size: int) -> Iterator[bytes]:
    """`{"error": "xxx…"}`, `size` bytes or more, as it streams."""
    yield b'{"error": "'
    for done in range(0, size, _FILL):
        yield b"x" * min(_FILL, size - done)
    yield b'"}'


def _handler_for(api: DemoApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

        def do_GET(self) -> None:
            try:
                self._answer()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (a timeout test, say)

        def _answer(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/ids":
                self._send_simple(404, b'{"error": "not found; try GET /ids"}')
                return
            presented = self.headers.get("Authorization")
            if api.authorize is not None and not api.authorize(presented):
                self._send_simple(401, json.dumps({"error": "invalid_token", "presented": presented}).encode())
                return
            faulty = (api.next_request_number() - 1) % api.faults.every == 0  # the 1st, then every k-th
            faults = api.faults if faulty else Faults()
            if faults.status:
                headers = {} if faults.retry_after is None else {"Retry-After": f"{faults.retry_after:g}"}
                if faults.error_body:
                    self._send_streamed(faults.status, error_body(faults.error_body), headers, faults)
                else:
                    self._send_simple(faults.status, b'{"error": "injected fault"}', headers)
                return
            if faults.delay:
                time.sleep(faults.delay)
            if faults.non_json:
                body: Iterable[bytes] = [b"<html><body>Service temporarily unavailable</body></html>"]
                self._send_streamed(200, body, {"Content-Type": "text/html"}, faults)
                return
            if faults.gzip_bomb:
                self._send_simple(200, api.gzip_bomb(faults.gzip_bomb), {"Content-Encoding": "gzip"})
                return
            body, link = api.body(parse_qs(url.query), faults)
            self._send_streamed(200, body, {"Link": f'<{link}>; rel="next"'} if link else {}, faults)

        def _send_streamed(self, status: int, body: Iterable[bytes], headers: dict[str, str], faults: Faults) -> None:
            """HTTP/1.1 chunked: one chunk per piece, or per byte when the body trickles."""
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers, "Transfer-Encoding": "chunked"}.items():
                self.send_header(name, value)
            self.end_headers()
            for number, piece in enumerate(body):
                if faults.truncate and number == 2:
                    self.close_connection = True
                    return  # the connection closes without the final chunk: a body cut short
                for part in (piece[i : i + 1] for i in range(len(piece))) if faults.trickle else [piece]:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    if faults.trickle:
                        self.wfile.flush()
                        time.sleep(faults.trickle)
            self.wfile.write(b"0\r\n\r\n")

        def _send_simple(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler
