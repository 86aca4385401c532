"""An incremental HTTP/1.1 response parser for one request at a time, on llhttp (through `httptools`).

Bytes go in as they arrive, in pieces of any size; a whole `Response` comes out once its body is
complete. llhttp frames the body (`Transfer-Encoding: chunked`, `Content-Length`, or the end of the
connection) and refuses what RFC 9112 refuses: a Content-Length that is not plain digits or that is
repeated, Content-Length together with Transfer-Encoding, chunk sizes that are not plain hex. This
module adds what llhttp leaves to its caller: it skips 1xx interim responses, finishes a body framed by
the close, accepts HTTP/1.x only, caps what a response may spend on framing (head, chunk-size lines,
trailers) and on its body, and says when bytes came after a response (`pending`), so the connection is not reused.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import httptools

_MAX_FRAMING = 64 * 1024  # bytes of a response that are not its body: head, chunk-size lines, trailers
_MAX_BODY = 1 << 20  # bytes of a body: Put Message answers take a few hundred; a bigger one is not storage
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
_REQUEST_ID = b"x-ms-request-id"
_REQUEST_ID_CHARS = 100
_ERROR_KINDS = (  # a word in llhttp's reason -> what our message says first
    ("content-length", "invalid Content-Length"),
    ("transfer-encoding", "invalid Transfer-Encoding"),
    ("chunk size", "invalid chunk size"),
    ("http/", "not an HTTP/1.x status line"),
    ("version", "not an HTTP/1.x status line"),
    ("status", "not an HTTP/1.x status line"),
    ("response line", "not an HTTP/1.x status line"),
)


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 response."""


class Response(NamedTuple):
    status: int
    body: bytes
    keep_alive: bool
    request_id: str = ""  # the service's `x-ms-request-id`, what Azure support asks for first


class ResponseParser:
    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._responses: deque[Response] = deque()  # complete, not yet returned by `feed`
        self._error: ProtocolError | None = None  # raised once the responses before it are returned
        self._in_response = False  # bytes of a response have arrived, its end has not
        self._head_done = False
        self._framed = False  # a Content-Length or Transfer-Encoding header: the close does not end the body
        self._status = 0
        self._keep_alive = True
        self._request_id = ""
        self._body: list[bytes] = []
        self._body_size = 0
        self._framing = 0  # bytes of the current response that are not body, counted feed by feed
        self._feed_size = 0
        self._body_in_feed = 0

    @property
    def pending(self) -> bool:
        """Bytes beyond the responses returned so far have arrived: on an idle connection, close it."""
        return self._in_response or bool(self._responses) or self._error is not None

    def feed(self, data: bytes) -> Response | None:
        """The oldest complete response not yet returned, if any; feed b"" to take the next one."""
        if data and self._error is None:
            self._feed_size, self._body_in_feed = len(data), 0
            try:
                self._parser.feed_data(data)
                if self._in_response:
                    self._framing += len(data) - self._body_in_feed
                    self._check_framing(0)
            except ProtocolError as exc:
                self._error = exc
            except httptools.HttpParserUpgrade:
                self._error = ProtocolError("the server switched protocols")
            except httptools.HttpParserError as exc:
                cause = exc.__context__  # what one of our callbacks raised, if one did
                self._error = cause if isinstance(cause, ProtocolError) else _protocol_error(str(exc))
        if self._responses:
            return self._responses.popleft()
        if self._error is not None:
            raise self._error
        return None

    def end_of_stream(self) -> Response | None:
        """The server closed the connection: completes a body framed by the close, if one was pending."""
        if self._error is not None or not self._head_done or self._framed:
            return None  # nothing begun, or a body cut short
        self._error = ProtocolError("the connection is closed")  # llhttp has no end-of-stream call
        return self._complete()

    # llhttp's callbacks (httptools looks them up by name)

    def on_message_begin(self) -> None:
        self._in_response = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) in (14, 17) and name.lower() in _FRAMING_HEADERS:
            self._framed = True
        elif len(name) == len(_REQUEST_ID) and name.lower() == _REQUEST_ID:
            self._request_id = value[:_REQUEST_ID_CHARS].decode("ascii", "replace")

    def on_headers_complete(self) -> None:
        version = self._parser.get_http_version()
        if not version.startswith("1."):
            raise ProtocolError(f"not an HTTP/1.x status line: HTTP/{version}")
        self._head_done = True
        self._status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()  # llhttp knows it only until the body ends

    def on_body(self, body: bytes) -> None:
        self._body_in_feed += len(body)
        self._body_size += len(body)
        if self._body_size > _MAX_BODY:
            raise ProtocolError(f"response body longer than {_MAX_BODY} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:
            self._reset()  # an interim response: the final one follows
            return
        # This feed's bytes that are not body, as if all were this response's: exact unless another
        # response shares the feed (a 1xx before it, or bytes after it: then the connection closes).
        self._check_framing(self._feed_size - self._body_in_feed)
        self._responses.append(self._complete())

    def _complete(self) -> Response:
        response = Response(self._status, b"".join(self._body), self._keep_alive, self._request_id)
        self._reset()
        return response

    def _reset(self) -> None:
        self._in_response = self._head_done = self._framed = False
        self._request_id = ""
        self._body.clear()
        self._body_size = 0
        self._framing = 0

    def _check_framing(self, more: int) -> None:
        if self._framing + more > _MAX_FRAMING:
            where = "chunk-size lines and trailers" if self._head_done else "response head"
            raise ProtocolError(f"{where} longer than {_MAX_FRAMING} bytes")


def _protocol_error(reason: str) -> ProtocolError:
    lowered = reason.lower()
    kind = next((kind for word, kind in _ERROR_KINDS if word in lowered), "invalid response")
    return ProtocolError(f"{kind}: {reason}")
