"""An incremental HTTP/1.1 response parser: just enough of RFC 9112 for one request at a time.

Bytes go in as they arrive, in pieces of any size; a whole `Response` comes out once its body is
complete. It frames bodies by `Transfer-Encoding: chunked`, `Content-Length`, or the end of the
connection, skips 1xx interim responses, and says whether the connection can be used again.
"""

from __future__ import annotations

from typing import NamedTuple

_MAX_HEAD = 64 * 1024
_NO_BODY = frozenset({204, 304})


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 response."""


class Response(NamedTuple):
    status: int
    body: bytes
    keep_alive: bool


class ResponseParser:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._state = "head"  # then "length", "chunk-size", "chunk-data", "trailers" or "close"
        self._status = 0
        self._keep_alive = True
        self._remaining = 0  # bytes of the body ("length") or of the current chunk still to come
        self._body = bytearray()
        self._steps = {
            "head": self._head, "length": self._length, "chunk-size": self._chunk_size,
            "chunk-data": self._chunk_data, "trailers": self._trailers, "close": self._close,
        }  # fmt: skip

    def feed(self, data: bytes) -> Response | None:
        self._buffer += data
        while True:
            done = self._steps[self._state]()
            if done is None or isinstance(done, Response):
                return done

    def end_of_stream(self) -> Response | None:
        """The server closed the connection: completes a body framed by the close, if one was pending."""
        if self._state != "close":
            return None
        self._body += self._buffer
        self._buffer.clear()
        return self._complete()

    # Each step consumes what it can: None = wait for more bytes, True = go on, Response = done.

    def _head(self) -> bool | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise ProtocolError(f"response head longer than {_MAX_HEAD} bytes")
            return None
        head = bytes(self._buffer[: end + 2]).lower()  # every header line ends with CRLF
        del self._buffer[: end + 4]
        version, code = head[:8], head[9:12]
        if not version.startswith(b"http/1.") or not code.isdigit() or head[8:9] != b" ":
            status_line = head.partition(b"\r")[0]
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(code)
        if 100 <= status < 200:
            return True  # an interim response: the final one follows
        self._status = status
        connection = _header(head, b"connection")
        self._keep_alive = b"close" not in connection and (version == b"http/1.1" or b"keep-alive" in connection)
        length = _header(head, b"content-length")
        if status in _NO_BODY:
            self._state, self._remaining = "length", 0
        elif b"chunked" in _header(head, b"transfer-encoding"):
            self._state = "chunk-size"
        elif length:
            if not length.isdigit():
                raise ProtocolError(f"invalid Content-Length: {length[:40]!r}")
            self._state, self._remaining = "length", int(length)
        else:
            self._state, self._keep_alive = "close", False
        return True

    def _length(self) -> Response | None:
        if len(self._buffer) < self._remaining:
            return None
        self._body += self._buffer[: self._remaining]
        del self._buffer[: self._remaining]
        return self._complete()

    def _chunk_size(self) -> bool | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            return None
        size = bytes(self._buffer[:end]).partition(b";")[0].strip()
        try:
            self._remaining = int(size, 16)
        except ValueError:
            raise ProtocolError(f"invalid chunk size: {size[:40]!r}") from None
        del self._buffer[: end + 2]
        self._state = "chunk-data" if self._remaining else "trailers"
        return True

    def _chunk_data(self) -> bool | None:
        if len(self._buffer) < self._remaining + 2:
            return None
        self._body += self._buffer[: self._remaining]
        del self._buffer[: self._remaining + 2]  # the chunk and its CRLF
        self._state = "chunk-size"
        return True

    def _trailers(self) -> Response | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            return None
        del self._buffer[: end + 2]
        return self._complete() if end == 0 else self._trailers()  # a blank line ends the trailers

    def _close(self) -> None:
        return None  # the body runs to the end of the connection

    def _complete(self) -> Response:
        response = Response(self._status, bytes(self._body), self._keep_alive)
        self._state = "head"
        self._body.clear()
        return response


def _header(head: bytes, name: bytes) -> bytes:
    """The value of header `name` in a lowercased response head, b"" if it is absent."""
    start = head.find(b"\r\n" + name + b":")
    if start < 0:
        return b""
    start += len(name) + 3
    return head[start : head.find(b"\r\n", start)].strip()
