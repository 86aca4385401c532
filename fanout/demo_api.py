"""The bundled external API: deterministic IDs over HTTP, with fault modes for tests and demos.

`GET /ids` answers `count` IDs (`?count=N` overrides the server's default), in one of the shapes a
real API takes:

- `none`: one JSON array, streamed in HTTP/1.1 chunked encoding so a million IDs never sit in memory;
- `next-link`: `{"data": [...], "links": {"next": "/ids?page_token=…"}}`, and the same link as an
  RFC 8288 `Link: <…>; rel="next"` header;
- `cursor`: `{"items": [...], "next_cursor": "…"}` (null on the last page), sent back as `?cursor=`;
- `page`: `{"data": [...]}` for `?page=P&per_page=S` (from 1), an empty page after the last.

With `objects` the items are `{"id": "<id>", "seq": n}` instead of the bare ID strings.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_MIX = 0x9E3779B97F4A7C15F39CC0605CEDC835
_MASK = (1 << 128) - 1
_PIECE = 1_000


def demo_id(index: int) -> str:
    """The index-th ID: a stable, UUID-shaped string."""
    h = f"{(index * _MIX) & _MASK:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def demo_ids(count: int) -> list[str]:
    return [demo_id(index) for index in range(count)]


@dataclass(frozen=True)
class Faults:
    """What the first and then every `every`-th request gets wrong: an error status (with Retry-After),
    a slow answer, a body cut short, or HTML instead of JSON. The other requests are answered correctly."""

    every: int = 1
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    truncate: bool = False
    non_json: bool = False
    foreign_next: bool = False  # next links point to another host


PAGINATIONS = ("none", "next-link", "cursor", "page")


class DemoApi:
    def __init__(
        self, count: int = 100_000, port: int = 0, faults: Faults = Faults(), *, pagination: str = "none",
        page_size: int = 1000, objects: bool = False,
    ) -> None:  # fmt: skip
        self.count = count
        self.faults = faults
        self.pagination = pagination
        self.page_size = page_size
        self.objects = objects
        self.requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
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
        return {"id": demo_id(index), "seq": index} if self.objects else demo_id(index)

    def body(self, count: int, *, non_json: bool = False) -> Iterator[bytes]:
        if non_json:
            yield b"<html><body>Service temporarily unavailable</body></html>"
            return
        yield b"["
        for start in range(0, count, _PIECE):
            items = (json.dumps(self.item(i)) for i in range(start, min(start + _PIECE, count)))
            yield (b"," if start else b"") + ",".join(items).encode()
        yield b"]"

    def page(self, query: dict[str, list[str]], count: int, foreign_next: bool) -> tuple[dict[str, object], str | None]:
        """One page of a paged mode, and its next link (next-link mode)."""
        size = self.page_size
        if self.pagination == "page":
            size = int(query.get("per_page", [size])[0])
            start = (int(query.get("page", ["1"])[0]) - 1) * size
        elif self.pagination == "cursor":
            cursor = query.get("cursor", [""])[0]
            start = int(base64.urlsafe_b64decode(cursor)) if cursor else 0
        else:
            start = int(query.get("page_token", ["0"])[0])
        end = min(start + size, count)
        items = [self.item(index) for index in range(max(start, 0), end)]
        if self.pagination == "page":
            return {"data": items}, None
        if self.pagination == "cursor":
            next_cursor = base64.urlsafe_b64encode(str(end).encode()).decode() if end < count else None
            return {"items": items, "next_cursor": next_cursor}, None
        host = f"http://127.0.0.2:{self._server.server_address[1]}" if foreign_next else ""
        link = f"{host}/ids?page_token={end}&count={count}" if end < count else None
        return {"data": items, "links": {"next": link}}, link


def _handler_for(api: DemoApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body: no 40 ms wait

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
            faulty = (api.next_request_number() - 1) % api.faults.every == 0  # the 1st, then every k-th
            faults = api.faults if faulty else Faults()
            if faults.status:
                headers = {} if faults.retry_after is None else {"Retry-After": f"{faults.retry_after:g}"}
                self._send_simple(faults.status, b'{"error": "injected fault"}', headers)
                return
            if faults.delay:
                time.sleep(faults.delay)
            query = parse_qs(url.query)
            count = int(query.get("count", [api.count])[0])
            if api.pagination != "none" and not faults.non_json:
                page, link = api.page(query, count, faults.foreign_next)
                self._send_simple(200, json.dumps(page).encode(), {"Link": f'<{link}>; rel="next"'} if link else {})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if faults.non_json else "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for number, piece in enumerate(api.body(count, non_json=faults.non_json)):
                if faults.truncate and number == 2:
                    self.close_connection = True
                    return  # the connection closes without the final chunk: a body cut short
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
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
