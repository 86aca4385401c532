"""Undoes an answer's Content-Encoding as its bytes arrive, with every layer's output bounded.

httpx inflates a whole network read in one call: 1.8 KB of `Content-Encoding: gzip, gzip` became 1 GiB inside
it before the app's size limit saw a byte. Here each layer asks zlib for at most PIECE_BYTES at a time
(`decompress(data, max_length)`, the rest of the input kept as `unconsumed_tail`) and hands that piece to the next
layer, and on to the caller, before it makes another. So memory stays about PIECE_BYTES per layer, whatever the
body, and a caller that stops iterating once its own size limit is passed stops the inflating too.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING

from core.errors import SourceError

if TYPE_CHECKING:
    from zlib import _Decompress

PIECE_BYTES = 64 * 1024
MAX_CODINGS = 3  # a stack deeper than this is an attack, not an API
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream
_RAW_WBITS = -zlib.MAX_WBITS  # a bare deflate stream


class CutShortError(Exception):
    """The encoded body ended before its compressed stream did (a body cut short: worth another try)."""


class _Inflate(ABC):
    """One compressed layer. Each piece it yields is at most PIECE_BYTES, and the next is made only once the
    consumer asks for it; besides zlib's own state it holds at most PIECE_BYTES of input (the unconsumed tail).
    zlib.error for data that does not decode."""

    def __init__(self) -> None:
        self._stream: _Decompress | None = None  # None until the first bytes arrive

    def feed(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        # zlib copies the unconsumed input on every call: slices bound that copy, however long the read
        for start in range(0, len(view), PIECE_BYTES):
            yield from self._inflate(view[start : start + PIECE_BYTES])

    def ended(self) -> bool:
        """Whether the body may end here: no bytes yet (an empty body), or the end of a stream."""
        return self._stream is None or self._stream.eof

    def _inflate(self, data: bytes | memoryview) -> Iterator[bytes]:
        full = False  # the last piece filled max_length: zlib may hold more output even with no input left
        while data or full:
            if self._stream is None or self._stream.eof:
                opened = self._open(bytes(data))
                if opened is None:
                    return
                self._stream, data = opened
            stream = self._stream
            piece = stream.decompress(data, PIECE_BYTES)
            if piece:
                yield piece
            full = len(piece) == PIECE_BYTES and not stream.eof
            data = stream.unused_data if stream.eof else stream.unconsumed_tail

    @abstractmethod
    def _open(self, data: bytes) -> tuple[_Decompress, bytes] | None:
        """The stream to decode `data` with (the first bytes, or bytes after a stream ended), and the bytes it
        starts at; None when `data` opens nothing (yet)."""


class _Gzip(_Inflate):
    """Gzip, several members one after another as RFC 1952 allows (and `gzip.decompress` reads)."""

    def _open(self, data: bytes) -> tuple[_Decompress, bytes] | None:
        if self._stream is not None:
            data = data.lstrip(b"\x00")  # zeros may pad the end of a member, as `gzip.decompress` allows
            if not data:
                return None
        return zlib.decompressobj(_GZIP_WBITS), data


class _Deflate(_Inflate):
    """A zlib stream, or a bare deflate stream as some servers send (browsers and httpx accept both): zlib checks
    a zlib header as soon as its first two bytes arrive, and the stream is taken as bare if they are not one."""

    def __init__(self) -> None:
        super().__init__()
        self._head = b""  # the first byte, while the second has not arrived

    def ended(self) -> bool:
        return not self._head and super().ended()

    def _open(self, data: bytes) -> tuple[_Decompress, bytes] | None:
        if self._stream is not None:
            raise zlib.error("bytes follow the end of the deflate stream")
        head = self._head + data
        if len(head) < 2:
            self._head = head
            return None
        self._head = b""
        stream = zlib.decompressobj()
        try:
            stream.decompress(head[:2], PIECE_BYTES)  # the zlib header: nothing comes out
        except zlib.error:
            return zlib.decompressobj(_RAW_WBITS), head
        return stream, head[2:]


_LAYERS: dict[str, type[_Inflate]] = {"gzip": _Gzip, "x-gzip": _Gzip, "deflate": _Deflate}


class ContentDecoder:
    """Undoes an answer's Content-Encoding as its bytes arrive, never holding more than about PIECE_BYTES of output
    per layer.

    Every piece it yields is at most PIECE_BYTES and not empty; the pieces, in order, are the decoded body. A piece
    is made only when the caller asks for the next one, so a caller that stops iterating stops the decoding (and is
    done with the decoder: the rest of that read is dropped).
    """

    def __init__(self, content_encoding: str | None, where: str) -> None:
        self._value = content_encoding
        self._where = where
        codings = [coding.strip().lower() for coding in (content_encoding or "").split(",")]
        codings = [coding for coding in codings if coding and coding != "identity"]
        if any(coding not in _LAYERS for coding in codings):
            raise SourceError(
                f"{where} answered Content-Encoding: {content_encoding}, which the app did not ask for "
                "(it asks for gzip or deflate)"
            )
        if len(codings) > MAX_CODINGS:
            raise SourceError(
                f"{where} answered Content-Encoding: {content_encoding}, {len(codings)} codings deep; "
                f"the app undoes at most {MAX_CODINGS}"
            )
        # listed in the order they were applied (RFC 9110 §8.4): the last one applied is undone first
        self._layers = [_LAYERS[coding]() for coding in reversed(codings)]

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes `data` (the body's next bytes as they arrived) completes; SourceError for a body that
        does not decode."""
        try:
            yield from self._through(0, data)
        except zlib.error as error:
            raise SourceError(
                f"{self._where} answered a body that does not decode (Content-Encoding: {self._value}): {error}"
            ) from error

    def finish(self) -> Iterator[bytes]:
        """What is left once the body has ended: nothing, as `feed` drains every layer, once it has checked that
        every compressed stream ended. CutShortError if one did not (a layer that got no bytes at all is an
        empty body, not a cut one)."""
        for layer in self._layers:
            if not layer.ended():
                raise CutShortError(
                    f"{self._where} answered a body cut short: it ended inside its compressed stream "
                    f"(Content-Encoding: {self._value})"
                )
        return iter(())

    def _through(self, depth: int, data: bytes) -> Iterator[bytes]:
        """`data` undone by the layers from `depth` on, each piece passed all the way out before the next is made."""
        if depth == len(self._layers):
            for start in range(0, len(data), PIECE_BYTES):
                yield data[start : start + PIECE_BYTES]  # a piece of the whole bytes is that object, not a copy
            return
        for piece in self._layers[depth].feed(data):
            yield from self._through(depth + 1, piece)
