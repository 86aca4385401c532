"""Refuses JSON nested deeper than a limit, while its bytes arrive, ahead of the parser.

A streaming parser keeps the path of every open array and object (ijson's `[[[…]]]` cost memory with
the square of its depth: 40 KB of brackets took 1 GB), and the C scanner that checks each item
(core/json_items.py) recurses. Counting the brackets outside strings bounds both. The common case costs
a `translate` and a `replace` per network read: strings without brackets in them vanish as `""` pairs;
only a chunk whose strings hold brackets is stripped of its strings by a regular expression. Both run in C.
"""

from __future__ import annotations

import re

from core.errors import SourceError

_MARKS = b'[]{}"'
_NOT_MARKS = bytes(byte for byte in range(256) if byte not in _MARKS)
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')  # once escapes are gone
_REST_OF_STRING = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)  # up to the closing quote, escapes included


class NestingGuard:
    """Fed an answer's bytes in order; raises SourceError once arrays and objects nest deeper than `limit`."""

    def __init__(self, limit: int, reason: str) -> None:
        self._limit = limit
        self._reason = reason
        self._depth = 0
        self._in_string = False
        self._escaped = False  # the last byte fed was a backslash inside a string: the next one is escaped

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._in_string:
            data = self._leave_string(data)
            if self._in_string:
                return
        escaped = False
        if b"\\" in data:
            data = _ESCAPE.sub(b"", data)  # an escape is in a string: `\"` must not end it
            escaped = data.endswith(b"\\")  # the escape goes on in the next read
            data = data.removesuffix(b"\\")
        marks = data.translate(None, _NOT_MARKS)
        quotes = marks.count(b'"')
        if quotes:
            if quotes % 2:  # the last string goes on in the next read
                marks = marks[: marks.rfind(b'"')]
                self._in_string, self._escaped = True, escaped
            marks = marks.replace(b'""', b"")
            if b'"' in marks:  # a string with brackets in it
                outside = _STRING.sub(b"", data)
                marks = outside[: outside.find(b'"')] if self._in_string else outside
        self._count(marks.translate(_AS_SQUARE, _NOT_BRACKETS))

    def _leave_string(self, data: bytes) -> bytes:
        """What follows the string the last read ended in (nothing, while it goes on)."""
        end = _REST_OF_STRING.match(data, 1 if self._escaped else 0).end()  # type: ignore[union-attr]
        if end < len(data) and data[end] == ord('"'):
            self._in_string = self._escaped = False
            return data[end + 1 :]
        self._escaped = end < len(data)  # it stopped short at a backslash, the last byte: the next one is escaped
        return b""

    def _count(self, brackets: bytes) -> None:
        """`brackets`: `[` and `]` only, in order."""
        opens = brackets.count(b"[")
        # Dropping the innermost pairs lowers the peak by one at most: scan what is left, then the whole.
        if (
            self._depth + opens > self._limit
            and self._depth + _peak(brackets.replace(b"[]", b"")) + 1 > self._limit
            and self._depth + _peak(brackets) > self._limit
        ):
            raise SourceError(self._reason)
        self._depth += 2 * opens - len(brackets)


def _peak(brackets: bytes) -> int:
    """The deepest `brackets` go, from where they start."""
    depth = peak = 0
    for byte in brackets:
        depth += 1 if byte == 0x5B else -1
        peak = max(peak, depth)
    return peak
