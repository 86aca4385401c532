"""Notices a paged source going round in circles: an API that ignores a misnamed cursor or page parameter
answers page 1 again and again, with the same cursor or next link each time.

Positions are remembered within an invocation; the digest of the page before the one a run resumes in
goes with the run, so that a page that comes back is noticed across continuations too."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from core.errors import SourceError

SEEN_POSITIONS = 100_000  # remembered at most; a longer circle is caught by SOURCE_MAX_PAGES


class RepeatGuard:
    """A position (cursor, next link) given a second time, or a page holding the same items as the page
    before it, raises SourceError; `hint` says which setting to check. `first`: the position reading
    starts at; `page_before`: the digest of the items of the page before it."""

    def __init__(self, where: str, hint: str, first: str | int | None, page_before: str | None) -> None:
        self._where = where
        self._hint = hint
        self._seen: set[int] = set() if first is None else {hash(first)}
        self.page_before: str | None = None  # digests of the items of the page before the last one read,
        self.last_page = page_before  # and of the last one

    def check(self, items: list[Any], next_page: str | int | None) -> None:
        """After each page: its items, and the position it points to."""
        digest = hashlib.blake2b(json.dumps(items).encode(), digest_size=16).hexdigest() if items else None
        if digest is not None and digest == self.last_page:
            self._fail(f"answered the same {len(items)} items as on the page before")
        self.page_before, self.last_page = self.last_page, digest
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
