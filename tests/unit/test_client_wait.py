"""`FanoutClient.wait` against a loopback app answering any Retry-After (numbers of any size and sign, NaN,
infinity, dates past and far future, garbage; Hypothesis): every wait is within its bounds, a run that ends
is returned at the look that saw it end, and one that never ends raises TimeoutError by its deadline."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC
from email.utils import format_datetime
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fanout.client
from fanout.client import LEAST_LOOK_SECONDS, MOST_LOOK_SECONDS, FanoutClient
from testkit.loop_server import LoopServer
from testkit.loopback_api import LoopbackApi

retry_afters = st.one_of(
    st.none(),
    st.integers(-(10**30), 10**30).map(str),
    st.floats().map(repr),
    st.sampled_from(["1e400", "-1e400", "inf", "0", "0.0001", "99999999"]),
    st.datetimes(timezones=st.just(UTC)).map(lambda when: format_datetime(when, usegmt=True)),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
)


class Clock:
    """time as `wait` sees it: sleeping only moves it on."""

    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class App:
    """Answers each look with the next Retry-After; the run is completed from look `ends_at` on."""

    def __init__(self) -> None:
        self.headers: Iterator[str | None] = iter(())
        self.ends_at, self.looks = 0, 0

    def answer(self, path: str, headers: object) -> tuple[int, dict[str, str], bytes]:
        self.looks += 1
        state = "completed" if self.ends_at and self.looks >= self.ends_at else "ingesting"
        retry_after = next(self.headers)
        return 200, {"Content-Type": "application/json", **({"Retry-After": retry_after} if retry_after else {})}, \
            json.dumps({"run_id": "r", "state": state}).encode()  # fmt: skip


@pytest.fixture(scope="module")
def app() -> Iterator[tuple[App, str]]:
    made = App()
    server = LoopbackApi(made.answer)
    yield made, server.url.removesuffix("/ids")
    server.stop()


@settings(max_examples=60, deadline=None)
@given(headers=st.lists(retry_afters, min_size=1, max_size=8), interval=st.sampled_from([0.5, 5.0, 120.0]),
       ends_at=st.integers(0, 12), timeout=st.sampled_from([None, 0.0, 4.0, 30.0]))  # fmt: skip
def test_any_retry_after_gives_a_bounded_wait_that_ends(app, headers, interval, ends_at, timeout):
    made, url = app
    made.headers, made.looks, made.ends_at = itertools.cycle(headers), 0, ends_at
    if timeout is None and not ends_at:
        ends_at = made.ends_at = 40  # a wait with no timeout on a run that never ends would be endless
    clock = Clock()
    with patch.object(fanout.client, "time", clock), FanoutClient(url) as client:
        try:
            final = client.wait("r", interval=interval, timeout=timeout)
        except TimeoutError:
            assert timeout is not None and clock.now >= timeout and made.looks < (ends_at or 10**9)
        else:
            assert final["state"] == "completed" and made.looks == ends_at
            assert timeout is None or clock.now <= timeout
    least, most = min(interval, LEAST_LOOK_SECONDS), max(interval, MOST_LOOK_SECONDS)
    assert all(seconds <= most for seconds in clock.sleeps)
    assert all(seconds >= least for seconds in clock.sleeps[:-1] if timeout is None)  # the last may end at the deadline
    assert timeout is None or made.looks <= timeout / least + 2


@pytest.mark.parametrize(("interval", "timeout"), [(0, None), (-1, None), (float("nan"), None), (1, float("inf"))])
def test_a_wait_that_could_spin_or_never_end_is_refused(app, interval, timeout):
    with FanoutClient(app[1]) as client, pytest.raises(ValueError, match="interval must be > 0"):
        client.wait("r", interval=interval, timeout=timeout)


class TricklingApp(LoopServer):
    """Answers every request with a 202 whose body comes a byte every half second (~20 s in all)."""

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"run_id": "r", "state": "ingesting"}'
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % len(body))  # fmt: skip
            for byte in body:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.5)
        writer.close()


def test_a_wait_ends_by_its_timeout_however_slowly_the_app_answers():
    app = TricklingApp().start()
    try:
        started = time.monotonic()
        with FanoutClient(f"http://127.0.0.1:{app.port}") as client, pytest.raises(TimeoutError):
            client.wait("r", interval=1, timeout=2)
        took = time.monotonic() - started
    finally:
        app.stop()
    assert took < 2 + LEAST_LOOK_SECONDS + 0.5, f"wait(timeout=2) returned after {took:.1f} s"
