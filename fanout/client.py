"""A small typed client of the app's HTTP API (docs/http-api.md), on httpx:

    with FanoutClient("https://APP.azurewebsites.net", key=KEY) as client:
        run = client.start(chunk_size=5000)
        final = client.wait(run["run_id"])          # looks again when each answer's Retry-After says
        print(final["state"], final["messages"]["enqueued"])

Every failure is a `FanoutApiError` carrying the answer's status and problem details (RFC 9457), or
status None when no answer came. The function key goes in `x-functions-key`, never in a URL.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
from collections.abc import Callable
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httpx

from core.retry import retry_after_seconds

Json = dict[str, Any]
FINAL_STATES = ("completed", "failed", "cancelled")
LEAST_LOOK_SECONDS, MOST_LOOK_SECONDS = 1.0, 60.0  # `wait`'s bounds on any Retry-After, widened by its interval


def next_look(retry_after: float | None, interval: float) -> float:
    """Seconds to the next look at a run: what its answer's Retry-After said, else `interval`; never less than
    min(`interval`, 1 s) nor more than max(`interval`, 60 s), whatever an answer says."""
    wait = interval if retry_after is None else retry_after
    return min(max(wait, min(interval, LEAST_LOOK_SECONDS)), max(interval, MOST_LOOK_SECONDS))


class FanoutApiError(Exception):
    """The app refused or failed a call: `status` (None: no answer), `problem` its problem details."""

    def __init__(self, status: int | None, problem: Json) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{status or 'no answer'}: {problem.get('detail') or problem.get('title') or ''}".strip())


class FanoutClient:
    """One app's API; `transport` lets tests and callers plug in their own httpx transport."""

    def __init__(
        self, base_url: str, key: str | None = None, *, timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:  # fmt: skip
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"the app's address must be http(s), e.g. https://APP.azurewebsites.net; got {base_url!r}")
        self.host = parts.netloc
        self._http = httpx.Client(
            base_url=f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/api/",
            headers={"x-functions-key": key} if key else {}, timeout=timeout, follow_redirects=False,
            transport=transport,
        )  # fmt: skip
        self._looks: concurrent.futures.ThreadPoolExecutor | None = None  # `wait`'s looks under a deadline

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections, which also ends a look `wait` gave up on."""
        if self._looks is not None:
            self._looks.shutdown(wait=False, cancel_futures=True)
        self._http.close()

    def start(self, **fields: Any) -> Json:
        """`POST /api/ingestions` with the body `fields` (source, chunk_size, run_id, …): the 202 answer."""
        return self._call("POST", "ingestions", json=fields)[0]

    def status(self, run_id: str) -> tuple[Json, float | None]:
        """The run's status, and the seconds its answer's Retry-After asks to wait (None: final, or not said)."""
        return self._call("GET", _run(run_id))

    def wait(
        self, run_id: str, *, interval: float = 5.0, timeout: float | None = None,
        on_status: Callable[[Json], None] = lambda status: None,
    ) -> Json:  # fmt: skip
        """Looks at the run until it is final (its last status), waiting what each answer's Retry-After says
        (else `interval`), never less than min(`interval`, 1 s) nor more than max(`interval`, 60 s), whatever
        an answer says; TimeoutError once `timeout` seconds passed, after a last look at the deadline, by
        `timeout` + 1 s however slowly the app answers."""
        if not 0 < interval < math.inf or (timeout is not None and not 0 <= timeout < math.inf):
            raise ValueError(f"interval must be > 0 and timeout ≥ 0 seconds, finite; got {interval}, {timeout}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status, retry_after = self._look(run_id, deadline, timeout)
            on_status(status)
            if status.get("state") in FINAL_STATES:
                return status
            wait = next_look(retry_after, interval)
            if deadline is not None:
                if (left := deadline - time.monotonic()) <= 0:
                    raise TimeoutError(f"run {run_id!r} is still {status.get('state')} after {timeout} s")
                wait = min(wait, left)
            time.sleep(wait)

    def _look(self, run_id: str, deadline: float | None, timeout: float | None) -> tuple[Json, float | None]:
        """`status`, given up at `deadline` (or a second from now, if later) however slowly the app answers (a
        byte at a time defeats httpx's timeouts, which bound each read, not the whole): the look goes on in its
        thread until `close`."""
        if deadline is None:
            return self.status(run_id)
        if self._looks is None:
            self._looks = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fanout-look")
        look = self._looks.submit(self.status, run_id)
        try:
            return look.result(timeout=max(LEAST_LOOK_SECONDS, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"run {run_id!r}: the app did not answer a look within the {timeout} s") from None

    def list(
        self, *, state: str | None = None, created_after: str | None = None, limit: int | None = None,
        continuation: str | None = None,
    ) -> Json:  # fmt: skip
        """A page of runs, newest first: `runs`, and the `continuation` of the next page (None: the last)."""
        params = {"state": state, "created_after": created_after, "limit": limit, "continuation": continuation}
        return self._call("GET", "ingestions", params={k: v for k, v in params.items() if v is not None})[0]

    def cancel(self, run_id: str) -> Json:
        return self._call("POST", _run(run_id) + "/cancel")[0]

    def redrive(self, run_id: str) -> Json:
        return self._call("POST", _run(run_id) + "/redrive")[0]

    def purge(self, run_id: str) -> Json:
        return self._call("DELETE", _run(run_id))[0]

    def _call(self, method: str, path: str, **request: Any) -> tuple[Json, float | None]:
        try:
            answer = self._http.request(method, path, **request)
        except httpx.TransportError as exc:
            raise FanoutApiError(None, {"title": type(exc).__name__, "detail": f"{self.host}: {exc}"}) from None
        body = _json(answer)
        if answer.is_success and isinstance(body, dict):
            return body, retry_after_seconds(answer.headers.get("Retry-After"))
        problem = body if isinstance(body, dict) and answer.is_error else {}
        detail = problem.get("detail") or f"{self.host} answered {answer.status_code}: {answer.text[:200]!r}"
        raise FanoutApiError(answer.status_code, {"status": answer.status_code, **problem, "detail": detail})


def _run(run_id: str) -> str:
    return "ingestions/" + quote(run_id, safe="")


def _json(answer: httpx.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None
