"""A source API on loopback that misbehaves as it is told: its pages, its faults and what it gives back
are data (`SourceSpec`), so that Hypothesis can generate them and shrink a failure to a readable one.

It pages in any of the app's modes, over the items it is given; an empty page may name a next one. It
can go round in a circle (the page after the last is an earlier one), ignore the position asked for
(answer page 0 every time), answer each page in a new order, change its answers from request N on, and
fail request number N in one of many
ways: an error status with a reason phrase of any length, a body that echoes the request's headers and
URL (secrets included), a body cut short with or without Content-Length, stacked content encodings,
bytes that trickle, a next position the app must refuse (a cursor that is an object, a link to another
host). `served` counts the items of every whole answer it gave.
"""

from __future__ import annotations

import gzip
import json
import random
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from testkit.loopback_api import LoopbackApi

Mode = Literal["none", "cursor", "next-link", "page"]
FaultKind = Literal["status", "echo", "cut", "cut-no-length", "trickle", "empty", "bad-next"]
SETTINGS: dict[Mode, dict[str, str]] = {
    "none": {"SOURCE_PAGINATION": "none"},
    "cursor": {"SOURCE_PAGINATION": "cursor", "SOURCE_ITEMS_PATH": "items", "SOURCE_CURSOR_PATH": "next"},
    "next-link": {"SOURCE_PAGINATION": "next-link", "SOURCE_ITEMS_PATH": "data", "SOURCE_NEXT_PATH": "links.next"},
    "page": {"SOURCE_PAGINATION": "page", "SOURCE_ITEMS_PATH": "data", "SOURCE_FIRST_PAGE": "0"},
}


@dataclass(frozen=True)
class Fault:
    """What request number `at` (from 0) gets instead of its answer."""

    at: int
    kind: FaultKind
    status: int = 503
    reason_chars: int = 0  # a reason phrase this long
    retry_after: str | None = None


@dataclass(frozen=True)
class SourceSpec:
    mode: Mode
    items: tuple[str, ...]  # each item's JSON text, in order
    pages: tuple[int, ...] = ()  # items a page holds (paged modes); an empty page names a next one
    circle_to: int | None = None  # after the last page, the next is this one (for ever)
    ignores_position: bool = False  # every request gets page 0
    shuffles: bool = False  # every answer gives its page's items in a new order
    changes_after: int | None = None  # from this request on, every page gives its items the other way round
    codings: tuple[str, ...] = ()  # Content-Encoding applied to every whole answer, in order
    faults: tuple[Fault, ...] = ()
    seed: int = 0

    def healthy(self) -> SourceSpec:
        """The same source without its faults (what a redrive meets once the source is back)."""
        return replace(self, faults=())

    def page_items(self) -> list[list[str]]:
        if self.mode == "none":
            return [list(self.items)]
        pages, start = [], 0
        for size in self.pages:
            pages.append(list(self.items[start : start + size]))
            start += size
        return pages


@dataclass
class HostileSource:
    """Serves `spec` on 127.0.0.1 until `stop`; `spec` may be swapped while it runs."""

    spec: SourceSpec
    requests: int = 0
    served: Counter[str] = field(default_factory=Counter)
    seen_headers: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = LoopbackApi(respond=self._answer)
        self.url = self._server.url

    def stop(self) -> None:
        self._server.stop()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            number, spec = self.requests, self.spec
            self.requests += 1
            self.seen_headers.append(dict(handler.headers))
        query = parse_qs(urlsplit(handler.path).query)
        fault = next((fault for fault in spec.faults if fault.at == number), None)
        if fault is not None and fault.kind in ("status", "echo"):
            echo = json.dumps({"error": "refused", "path": handler.path, "headers": dict(handler.headers)})
            body = echo.encode() if fault.kind == "echo" else b'{"error": "injected"}'
            reason = ("x" * fault.reason_chars) or "Injected"
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            _send(handler, fault.status, reason, body, headers)
            return
        items, following = self._page(spec, query, number)
        body = _document(spec, items, following, bad_next=fault is not None and fault.kind == "bad-next")
        encoded = _encoded(body, spec.codings)
        headers = {"Content-Type": "application/json"}
        if spec.codings:
            headers["Content-Encoding"] = ", ".join(spec.codings)
        if fault is not None and fault.kind in ("cut", "cut-no-length"):
            _send_cut(handler, encoded, headers, with_length=fault.kind == "cut")
            return
        if fault is not None and fault.kind == "empty":
            _send(handler, 200, "OK", b"", headers)
            return
        _send(handler, 200, "OK", encoded, headers, trickle=fault is not None and fault.kind == "trickle")
        with self._lock:
            self.served.update(items)

    def _page(self, spec: SourceSpec, query: dict[str, list[str]], number: int) -> tuple[list[str], str | None]:
        """The items of the page asked for, and the position of the next one (None after the last)."""
        pages = spec.page_items()
        if spec.mode == "none":
            return pages[0], None
        asked = {"cursor": query.get("cursor"), "next-link": query.get("p"), "page": query.get("page")}[spec.mode]
        index = 0 if spec.ignores_position or not asked else int(asked[0].lstrip("c"))
        if spec.mode == "page" and spec.circle_to is not None and index >= len(pages) > spec.circle_to:
            index = spec.circle_to + (index - len(pages)) % (len(pages) - spec.circle_to)  # page numbers go round
        items = list(pages[index]) if index < len(pages) else []
        if spec.shuffles:
            random.Random(spec.seed * 1_000_003 + number).shuffle(items)
        if spec.changes_after is not None and number >= spec.changes_after:
            items.reverse()
        following: int | None = index + 1
        if index + 1 >= len(pages):
            following = spec.circle_to if spec.mode != "page" else index + 1
        if spec.mode != "page" and following is not None and following >= len(pages):
            following = None
        return items, None if following is None else str(following)


def _document(spec: SourceSpec, items: list[str], following: str | None, *, bad_next: bool = False) -> bytes:
    """The page's JSON; `bad_next`: a next position the app must refuse (a cursor that is an object, a link
    to another host), where one follows."""
    listed = "[" + ",".join(items) + "]"
    if spec.mode == "none":
        return listed.encode()
    if spec.mode == "cursor":
        cursor = json.dumps(None if following is None else f"c{following}")
        cursor = '{"c": 1}' if bad_next and following is not None else cursor
        return f'{{"items": {listed}, "next": {cursor}}}'.encode()
    if spec.mode == "next-link":
        host = "http://127.0.0.2:9" if bad_next else ""
        link = json.dumps(None if following is None else f"{host}/ids?p={following}")
        return f'{{"data": {listed}, "links": {{"next": {link}}}}}'.encode()
    return f'{{"data": {listed}}}'.encode()


def _encoded(body: bytes, codings: tuple[str, ...]) -> bytes:
    for coding in codings:
        body = gzip.compress(body, mtime=0) if coding == "gzip" else zlib.compress(body)
    return body


def _send(
    handler: BaseHTTPRequestHandler, status: int, reason: str, body: bytes, headers: dict[str, str],
    *, trickle: bool = False,
) -> None:  # fmt: skip
    handler.send_response(status, reason)
    for name, value in {**headers, "Content-Length": str(len(body))}.items():
        handler.send_header(name, value)
    handler.end_headers()
    if not trickle:
        handler.wfile.write(body)
        return
    for start in range(0, len(body), 7):
        handler.wfile.write(body[start : start + 7])
        handler.wfile.flush()
        time.sleep(0.001)


def _send_cut(handler: BaseHTTPRequestHandler, body: bytes, headers: dict[str, str], *, with_length: bool) -> None:
    """Half the body, then the connection closes: with its full Content-Length (a client knows it is short)
    or without one (the body ends where the connection does: only what the body holds can tell)."""
    handler.send_response(200, "OK")
    for name, value in headers.items():
        handler.send_header(name, value)
    if with_length:
        handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(body[: len(body) // 2])
    handler.wfile.flush()
    handler.close_connection = True
