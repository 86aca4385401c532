"""The app's status route over real HTTP on loopback, for the `watch --url` tests: each request goes to the
app's own `get_ingestion_status` function, behind a function key as in Azure."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import azure.functions as func

from core.storage import close_storage_clients

PREFIX = "/api/ingestions/"


class AppServer:
    def __init__(self, get_status: Any, key: str) -> None:
        self.looks = 0  # status answers given
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("x-functions-key") != key:
                    self._send(401, b"", {})
                    return
                run_id = self.path.removeprefix(PREFIX)
                request = func.HttpRequest("GET", f"http://localhost{self.path}", route_params={"run_id": run_id},
                                           body=b"")  # fmt: skip
                answer = asyncio.run(_answer(get_status, request))
                self._send(answer.status_code, answer.get_body(), dict(answer.headers))
                server.looks += 1  # answered: what it saw is on its way

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


async def _answer(get_status: Any, request: func.HttpRequest) -> func.HttpResponse:
    try:
        return await get_status(request)
    finally:
        await close_storage_clients()
