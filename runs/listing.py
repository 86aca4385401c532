"""Listing runs, newest first, a page at a time.

The run index (core/contract.py) names each run after its creation, inverted, so the storage listing,
which is in name order, is newest first: a page is one listing call, never a scan of every run. Each
run's state is derived as its status is (core/status.py). A state filter may leave a page short of
`limit`, even empty; the continuation says where the next page starts, as long as there is one.
The continuation is opaque to callers: base64url JSON of the storage listing's marker, the position
in that listing page and the page's size, signed (HMAC-SHA256 with a key kept in the runs container),
so a token this API did not give is refused before it reaches storage.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import cast

from azure.core.exceptions import HttpResponseError

from core.context import Context
from core.contract import parse_run_index_blob
from core.errors import ContractError, RequestError
from core.run_store import RunStore
from core.status import STATES, RunState, RunStatus, run_status

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_SCANNED = 500  # runs one listing call looks at, whatever its filter, before it answers
READS_AT_ONCE = 16
_TOKEN_MAX = 2048
_MARKER = re.compile(r"[\x21-\x7e]{1,1024}")


@dataclass(frozen=True)
class RunListQuery:
    state: RunState | None = None
    created_after: datetime | None = None
    limit: int = DEFAULT_LIMIT
    continuation: str | None = None


@dataclass(frozen=True)
class RunPage:
    runs: list[RunStatus]
    continuation: str | None
    unreadable: dict[str, str] = field(default_factory=dict)  # run id → why its records cannot be read


@dataclass(frozen=True)
class _Position:
    """Where listing resumes: a listing page (its marker; None: the first) of `size` names, from `offset`."""

    marker: str | None
    offset: int
    size: int

    def encode(self, key: bytes) -> str:
        raw = json.dumps({"m": self.marker, "o": self.offset, "n": self.size}, separators=(",", ":")).encode()
        return f"{_b64(raw)}.{_b64(_signature(key, raw))}"

    @classmethod
    def decode(cls, token: str, key: bytes) -> _Position:
        bad = _foreign_continuation()
        if len(token) > _TOKEN_MAX or not re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token):
            raise bad
        payload, signature = token.split(".")
        try:
            raw = _unb64(payload)
            if not hmac.compare_digest(_unb64(signature), _signature(key, raw)):
                raise bad
            value = json.loads(raw)
        except (binascii.Error, ValueError, RecursionError):
            raise bad from None
        if not isinstance(value, dict) or set(value) != {"m", "o", "n"}:
            raise bad
        marker, offset, size = value["m"], value["o"], value["n"]
        if not (marker is None or (isinstance(marker, str) and _MARKER.fullmatch(marker))):
            raise bad
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in (offset, size)):
            raise bad
        if not (1 <= size <= MAX_LIMIT and 0 <= offset < size):
            raise bad
        return cls(marker, offset, size)


def _signature(key: bytes, raw: bytes) -> bytes:
    return hmac.new(key, raw, hashlib.sha256).digest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_list_query(params: Mapping[str, str]) -> RunListQuery:
    """`state`, `created_after`, `limit`, `continuation`, each checked; other parameters (`code`) are not ours."""
    state = params.get("state") or None
    if state is not None and state not in STATES:
        raise RequestError(f"state must be one of {', '.join(STATES)}, got {state[:40]!r}", field="state")
    return RunListQuery(
        state=state,
        created_after=_instant(params.get("created_after") or None),
        limit=_limit(params.get("limit") or None),
        continuation=params.get("continuation") or None,
    )


def _instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text) if len(text) <= 40 else None
    except ValueError:
        value = None
    if value is None:
        raise RequestError(
            f"created_after must be an ISO 8601 time such as 2026-11-23T19:00:00Z, got {text[:40]!r}",
            field="created_after",
        )
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit() and len(text) <= 3 and 1 <= int(text) <= MAX_LIMIT):
        raise RequestError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {text[:40]!r}", field="limit")
    return int(text)


async def list_runs(ctx: Context, query: RunListQuery, *, fill: bool = False) -> RunPage:
    """A page of runs, newest first; `fill`: read on until `limit` runs are found or none are left (a state
    filter may leave one page short), as the command line shows them."""
    page = await _list_page(ctx.runs, query)
    found, unreadable = page.runs, dict(page.unreadable)
    while fill and page.continuation and len(found) < query.limit:
        page = await _list_page(
            ctx.runs, replace(query, limit=query.limit - len(found), continuation=page.continuation)
        )
        found += page.runs
        unreadable |= page.unreadable
    return RunPage(found, page.continuation, unreadable)


async def _list_page(runs: RunStore, query: RunListQuery) -> RunPage:
    key = await runs.signing_key()
    position = _Position.decode(query.continuation, key) if query.continuation else _Position(None, 0, query.limit)
    after_ms = None if query.created_after is None else int(query.created_after.timestamp() * 1000)
    found: list[RunStatus] = []
    unreadable: dict[str, str] = {}
    scanned = 0
    reads = asyncio.Semaphore(READS_AT_ONCE)

    async def status_of(run_id: str) -> RunStatus | ContractError | None:
        """None for a run gone meanwhile; the error of one whose records are out of shape, which the page names
        in `unreadable` (where it lists it), so that one run nobody can read takes no listing down."""
        async with reads:
            try:
                return await run_status(runs, run_id, with_errors=False)
            except ContractError as exc:
                return exc

    def page(continuation: str | None) -> RunPage:
        return RunPage(found, continuation, unreadable)

    while True:
        names, next_marker = await _index_page(runs, position)
        entries = [(index, parse_run_index_blob(name)) for index, name in enumerate(names)][position.offset :]
        newer = [(index, entry) for index, entry in entries if entry is not None]
        cut_off = after_ms is not None and any(created_ms <= after_ms for _, (created_ms, _) in newer)
        if cut_off:  # what follows is older still
            newer = [(index, entry) for index, entry in newer if entry[0] > cast(int, after_ms)]
        statuses = await asyncio.gather(*(status_of(run_id) for _, (_, run_id) in newer))
        for (index, (_, run_id)), status in zip(newer, statuses, strict=True):
            scanned += 1
            if isinstance(status, ContractError):
                unreadable[run_id] = str(status)
            elif status is not None and query.state in (None, status.state):
                found.append(status)
            if len(found) == query.limit:
                if any(later > index for later, _ in newer):
                    return page(_Position(position.marker, index + 1, position.size).encode(key))
                if cut_off or next_marker is None:
                    return page(None)
                return page(_Position(next_marker, 0, position.size).encode(key))
        if cut_off or next_marker is None:
            return page(None)
        position = _Position(next_marker, 0, position.size)
        if scanned >= MAX_SCANNED:
            return page(position.encode(key))


async def _index_page(runs: RunStore, position: _Position) -> tuple[list[str], str | None]:
    try:
        return await runs.index_page(position.size, position.marker)
    except HttpResponseError as exc:
        if exc.status_code == 400:
            raise _foreign_continuation() from None
        raise


def _foreign_continuation() -> RequestError:
    return RequestError("continuation is not one this API gave; list again without it", field="continuation")
