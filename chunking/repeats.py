"""Notices a paged source going round in circles: an API that ignores a misnamed cursor or page parameter
answers page 1 again and again, with the same cursor or next link each time."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from core.errors import SourceError

SEEN_POSITIONS = 100_000  # remembered at most; a longer circle is caught by SOURCE_MAX_PAGES


class RepeatGuard:
    """Within one invocation: a position (cursor, next link) given a second time, or a page holding the same
    items as the page before it, raises SourceError; `hint` says which setting to check."""

    def __init__(self, where: str, hint: str, first: str | int | None) -> None:
        self._where = where
        self._hint = hint
        self._seen: set[int] = set() if first is None else {hash(first)}
        self._last_page: bytes | None = None

    def check(self, items: list[Any], next_page: str | int | None) -> None:
        """After each page: its items, and the position it points to."""
        if items:
            digest = hashlib.blake2b(json.dumps(items).encode(), digest_size=16).digest()
            if digest == self._last_page:
                self._fail(f"answered the same {len(items)} items as on the page before")
            self._last_page = digest
        if next_page is None:
            return
        if hash(next_page) in self._seen:
            self._fail(f"pointed to {str(next_page)[:200]!r} a second time")
        if len(self._seen) >= SEEN_POSITIONS:
            self._seen.clear()
        self._seen.add(hash(next_page))

    def _fail(self, what: str) -> None:
        raise SourceError(
            f"{self._where} {what}: it seems not to read where the app asks it to go on; check {self._hint}"
        )
