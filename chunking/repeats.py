"""Notices a paged source going round in circles, whatever the period and the order, and bounds what a
run may read for each item it found new:

- a position (cursor, next link) given a second time within an invocation fails at once, naming the
  setting to check: an API that ignores a misnamed parameter answers page 1 again and again;
- a page holding the same items as the page before, in any order (its digest is the sum of its items'
  hashes), fails the run;
- more than SOURCE_MAX_EMPTY_PAGES empty pages in a row fail it (an empty page that names a next one is
  legal, AIP-158: it is followed);
- more than SOURCE_MAX_READS_PER_ITEM items read for each distinct item found (`DistinctItems`), past
  REREAD_SLACK, fail it: a source that answers what it answered before, in any order and period, across
  continuations, is caught within that multiple.

So a run reads at most SOURCE_MAX_READS_PER_ITEM times its distinct items, plus REREAD_SLACK,, and at most
SOURCE_MAX_EMPTY_PAGES pages between two that hold items. The digest of the page before and the sketch
go with the run; positions are remembered within an invocation only.
"""

from __future__ import annotations

from chunking.distinct_items import DistinctItems, item_hash
from core.errors import SourceError
from core.settings import SOURCE_MAX_EMPTY_PAGES, SOURCE_MAX_READS_PER_ITEM, SourceLimits

SEEN_POSITIONS = 100_000  # remembered at most; a longer circle is caught by the reads per item
REREAD_SLACK = 100  # items read again that never fail a run, whatever its size
_DIGEST_MASK = (1 << 64) - 1


class RepeatGuard:
    """`hint` names the setting to check; `first`: the position reading starts at; `page_before`: the digest
    of the page before it; `seen`: the run's sketch of distinct items, as saved."""

    def __init__(
        self, where: str, hint: str, limits: SourceLimits, first: str | int | None, page_before: str | None,
        seen: str | None,
    ) -> None:  # fmt: skip
        self._where = where
        self._hint = hint
        self._limits = limits
        self._positions: set[int] = set() if first is None else {hash(first)}
        self._distinct = DistinctItems(seen)
        self._empty_pages = 0
        self._sum = self._count = 0
        self.last_page = page_before  # the digest of the last page that ended
        self.before_page = page_before  # the digest of the page before the one being read

    def page_started(self) -> None:
        """A page is read from its start (the first time, or again after a failure)."""
        self._sum = self._count = 0
        self.before_page = self.last_page

    def item(self, text: str) -> None:
        """Each item of the page, those skipped on a resume too."""
        digest = item_hash(text)
        self._distinct.add(digest)
        self._sum = (self._sum + digest) & _DIGEST_MASK
        self._count += 1

    def check_reads(self, taken: int) -> None:
        """`taken`: the items the run has taken in all."""
        allowed = self._limits.max_reads_per_item * self._distinct.estimate() + REREAD_SLACK
        if taken > allowed:
            raise SourceError(
                f"{self._where} answered {taken:,} items of which about {self._distinct.estimate():,.0f} differ, "
                f"more than {SOURCE_MAX_READS_PER_ITEM.name}={self._limits.max_reads_per_item:g} reads an item: it "
                f"answers what it answered before (check {self._hint}), or holds that many duplicates (raise "
                f"{SOURCE_MAX_READS_PER_ITEM.name})"
            )

    def page_ended(self, next_page: str | int | None) -> None:
        """After each page: the position it points to (None: it was the last)."""
        if self._count:
            digest = f"{self._count}:{self._sum:016x}"
            if digest == self.last_page:
                self._fail(f"answered the same {self._count} items as on the page before")
            self.last_page, self._empty_pages = digest, 0
        elif next_page is not None:
            self._empty_pages += 1
            if self._empty_pages > self._limits.max_empty_pages:
                raise SourceError(
                    f"{self._where} answered more than {SOURCE_MAX_EMPTY_PAGES.name}={self._limits.max_empty_pages} "
                    f"empty pages in a row, each naming a next one: raise it for a source that filters that much, "
                    f"else check {self._hint}"
                )
        if next_page is None:
            return
        if hash(next_page) in self._positions:
            self._fail(f"pointed to {str(next_page)[:200]!r} a second time")
        if len(self._positions) >= SEEN_POSITIONS:
            self._positions.clear()
        self._positions.add(hash(next_page))

    def seen(self) -> str:
        """The sketch of distinct items, to go with the run."""
        return self._distinct.saved()

    def _fail(self, what: str) -> None:
        raise SourceError(
            f"{self._where} {what}: it seems not to read where the app asks it to go on; check {self._hint}"
        )
