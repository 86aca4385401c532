"""`python -m fanout watch`: follow a run to its end, from local storage or a deployed app's status URL.

Each look shows a progress bar, the pace and the ETA the status reports; the watch ends with the run's
final state, which its exit code says: 0 completed, 1 failed, 3 cancelled.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from core.context import app_context
from core.errors import FanoutError, RunNotFoundError
from core.status import FINAL_STATES, STATES, run_status
from core.storage import close_storage_clients
from fanout.client import FanoutApiError, FanoutClient, next_look

EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 3}
BAR_WIDTH = 30
MAX_FAILED_LOOKS = 5  # in a row, before the watch gives up on an app that does not answer
LONGEST_WAIT = 30.0


@dataclass(frozen=True)
class Look:
    """A run's status as one look saw it, and how long the app asked to wait before the next (None: not said)."""

    status: dict[str, Any]
    retry_after: float | None = None


Looker = Callable[[], Look]


def local_looker(run_id: str, loop: asyncio.AbstractEventLoop) -> Looker:
    """Looks in the storage the environment names (`AzureWebJobsStorage`), on `loop`."""

    def look() -> Look:
        status = loop.run_until_complete(_local_status(run_id))
        if status is None:
            raise RunNotFoundError(f"no run {run_id!r}")
        return Look(status.to_json())

    return look


async def _local_status(run_id: str) -> Any:
    return await run_status((await app_context()).runs, run_id)


def remote_looker(client: FanoutClient, run_id: str) -> Looker:
    """Asks a deployed app's `GET /api/ingestions/{run_id}` through the client (fanout/client.py), which sends
    the function key in `x-functions-key` (never in the URL, which error messages show)."""
    failures = 0

    def look() -> Look:
        nonlocal failures
        while True:
            try:
                status, retry_after = client.status(run_id)
            except FanoutApiError as exc:
                if exc.status == 404:
                    raise RunNotFoundError(f"no run {run_id!r} at {client.host}") from None
                if exc.status in (401, 403):
                    raise FanoutError(
                        f"{client.host} answered {exc.status}: pass the function key with --key"
                    ) from None
                if exc.status is not None and exc.status < 500:
                    raise FanoutError(str(exc)) from None
                reason = str(exc)
            else:
                return Look(_run_status(status, client.host), retry_after)
            failures += 1
            if failures >= MAX_FAILED_LOOKS:
                raise FanoutError(f"gave up after {failures} failed looks in a row; the last: {reason}")
            time.sleep(min(LONGEST_WAIT, 2.0**failures))

    return look


def _run_status(status: dict[str, Any], host: str) -> dict[str, Any]:
    """The answer's run status, checked for what the watch reads."""
    if (
        status.get("state") not in STATES
        or not isinstance(status.get("messages"), dict)
        or not isinstance(status.get("chunks"), dict)
        or not isinstance(status["messages"].get("enqueued"), int)
        or not isinstance(status["messages"].get("fetched"), int | None)
        or not isinstance(status["chunks"].get("ingested"), int)
    ):
        raise FanoutError(f"{host} did not answer a run status: {str(status)[:200]!r}")
    return status


def watch(look: Looker, interval: float, out: TextIO, *, live: bool) -> str:
    """Looks until the run is final; shows each look (`live`: redrawn on one line); returns the final state."""
    shown = ""
    while True:
        seen = look()
        line = progress_line(seen.status)
        if live:
            print(f"\r\033[K{line}", end="", file=out, flush=True)
        elif line != shown:
            print(line, file=out, flush=True)
        shown = line
        state = str(seen.status["state"])
        if state in FINAL_STATES:
            if live:
                print(file=out, flush=True)
            return state
        time.sleep(next_look(seen.retry_after, interval))


def progress_line(status: dict[str, Any]) -> str:
    """`ingesting [#######-------] 45% 45,000/100,000 messages, 9/20 chunks, 850 msg/s, ETA 1m05s`."""
    messages, chunks = status["messages"], status["chunks"]
    enqueued, fetched = messages["enqueued"], messages["fetched"]
    share = min(1.0, enqueued / fetched) if fetched else (1.0 if status["state"] == "completed" else 0.0)
    filled = round(share * BAR_WIDTH)
    parts = [
        f"{status['state']} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {share:4.0%} "
        f"{enqueued:,}/{'?' if fetched is None else f'{fetched:,}'} messages",
        f"{chunks['ingested']}/{'?' if chunks['total'] is None else chunks['total']} chunks",
    ]
    if chunks.get("failed"):
        parts.append(f"{chunks['failed']} failed")
    if status.get("messages_per_second") is not None:
        parts.append(f"{status['messages_per_second']:,.0f} msg/s")
    if status.get("eta_seconds") is not None:
        parts.append(f"ETA {_duration(status['eta_seconds'])}")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def watch_run(run_id: str, url: str | None, key: str | None, interval: float) -> int:
    """The `watch` command: follows the run, returns the exit code its final state says."""
    live = sys.stderr.isatty()
    out = sys.stderr if live else sys.stdout
    if url is not None:
        try:
            client = FanoutClient(url, key)
        except ValueError:
            raise FanoutError(
                f"--url must be the app's http(s) address, e.g. https://APP.azurewebsites.net; got {url!r}"
            ) from None
        with client:
            state = watch(remote_looker(client, run_id), interval, out, live=live)
    else:
        loop = asyncio.new_event_loop()
        try:
            state = watch(local_looker(run_id, loop), interval, out, live=live)
        finally:
            loop.run_until_complete(close_storage_clients())
            loop.close()
    print(f"{run_id}: {state}", flush=True)
    return EXIT_CODES[state]
