"""The bundled external API: deterministic IDs over HTTP, with fault modes for tests and demos.

`GET /ids` answers a JSON array of `count` IDs (`?count=N` overrides the server's default),
streamed in HTTP/1.1 chunked encoding so a million IDs never sit in memory.
"""

from __future__ import annotations

import json
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


class DemoApi:
    def __init__(self, count: int = 100_000, port: int = 0, faults: Faults = Faults()) -> None:
        self.count = count
        self.faults = faults
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

    @staticmethod
    def body(count: int, *, non_json: bool = False) -> Iterator[bytes]:
        if non_json:
            yield b"<html><body>Service temporarily unavailable</body></html>"
            return
        yield b"["
        for start in range(0, count, _PIECE):
            ids = (json.dumps(demo_id(i)) for i in range(start, min(start + _PIECE, count)))
            yield (b"," if start else b"") + ",".join(ids).encode()
        yield b"]"


def _handler_for(api: DemoApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

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
            count = int(parse_qs(url.query).get("count", [api.count])[0])
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
