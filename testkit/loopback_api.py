"""A loopback HTTP API for tests that need a source answering what no real one would: every GET gets
what `answer(path, headers)` returns, or whatever `respond(handler)` writes itself (a body cut short, a
reason phrase of any length, bytes that trickle). A POST is answered alike, once its body is read; `posts`
keeps each POST's headers and body, in order. Given `tls`, it serves HTTPS with it and counts the connections it
accepted (`accepted`), handshakes failed too."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Answer = tuple[int, dict[str, str], bytes]  # status, headers, body


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-answer (a read cut short, a killed invocation) is no news here."""


class LoopbackApi:
    def __init__(
        self, answer: Callable[[str, Message], Answer] | None = None,
        respond: Callable[[BaseHTTPRequestHandler], None] | None = None, tls: ssl.SSLContext | None = None,
    ) -> None:  # fmt: skip
        self.accepted = 0
        posts: list[tuple[Message, bytes]] = []
        self.posts = posts

        def send(handler: BaseHTTPRequestHandler) -> None:
            assert answer is not None
            status, headers, body = answer(handler.path, handler.headers)
            handler.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def do_GET(self) -> None:
                (respond or send)(self)

            def do_POST(self) -> None:
                posts.append((self.headers, self.rfile.read(int(self.headers.get("Content-Length") or 0))))
                (respond or send)(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            listening = self._server.socket

            def accept() -> tuple[object, object]:  # the handshake in the handler's thread, not the listener's
                connection, address = listening.accept()
                self.accepted += 1
                return tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False), address

            self._server.get_request = accept  # type: ignore[method-assign,assignment]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._server.server_address[1]}/ids"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
