"""Completion events as CloudEvents to RUN_EVENTS_WEBHOOK, against loopback receivers: delivered at least
once, retried within bounds, recorded on the run as delivered or undelivered, the run's state untouched,
the URL's secrets nowhere, the sweeper never looping on a bad webhook."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
import time
from email.message import Message

import pytest
from azure.functions.timer import TimerRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.context import app_context
from core.settings import Settings
from core.webhook import CLOUDEVENTS_JSON, deliver
from runs.sweep import sweep
from testkit.chunked_runs import delivered
from testkit.http_requests import body_of, delete_request, post_ingestion, status_of
from testkit.loopback_api import Answer, LoopbackApi
from testkit.run_events import events_of

SECRET = "webhook-code-9f8e7d6c5b4a"


class Scripted(LoopbackApi):
    """A receiver answering each POST with the next status of its script (the last one once they run out)."""

    def __init__(self, statuses: list[int]) -> None:
        super().__init__(self._answer)
        self.play(statuses)

    def play(self, statuses: list[int]) -> None:
        self._script, self._last = iter(statuses), statuses[-1]
        self.posts.clear()

    def _answer(self, path: str, headers: Message) -> Answer:
        self._last = next(self._script, self._last)
        location = {"Location": "http://127.0.0.1:9/elsewhere"} if 300 <= self._last < 400 else {}
        return self._last, location, b""


@pytest.fixture
def webhook_env(monkeypatch, app_env):
    def use(receiver: LoopbackApi, **extra: str) -> dict[str, str]:
        monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "300"))
        monkeypatch.setenv("RUN_EVENTS_WEBHOOK", f"{receiver.url.removesuffix('/ids')}/events?code={SECRET}")
        for name, value in {"RUN_EVENTS_WEBHOOK_TIMEOUT": "0.3", "RUN_EVENTS_WEBHOOK_RETRY_DELAY": "0.01",
                            "RUN_EVENTS_WEBHOOK_ATTEMPTS": "3", **extra}.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        return app_env

    return use


def run_to_its_end(on_loop, functions, probe, run_id: str) -> dict:
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": run_id, "chunk_size": 300})))
    (name,) = probe.chunk_names(run_id)
    on_loop(functions["ingest_chunk"](delivered(probe, name)))
    return status_of(on_loop, functions, run_id)


def sweep_later(on_loop) -> None:
    async def one_sweep() -> None:
        await sweep(await app_context(), now=time.time() + 86_400)

    on_loop(one_sweep())


def test_a_run_end_reaches_an_echoing_webhook_as_a_cloudevent_and_no_secret_leaks(
    on_loop, functions, probe, webhook_env, caplog
):
    def echo(path: str, headers: Message) -> Answer:  # the request's path (with its code=) and headers, echoed
        return 200, {"Content-Type": "text/plain"}, f"{path}\n{headers}".encode()

    receiver = LoopbackApi(echo)
    env = webhook_env(receiver)
    caplog.set_level(logging.INFO)

    status = run_to_its_end(on_loop, functions, probe, "to-the-webhook")

    (queued,) = events_of(probe, env)
    ((headers, body),) = receiver.posts
    event = json.loads(body)
    assert headers["Content-Type"] == CLOUDEVENTS_JSON and "Authorization" not in headers
    assert event["specversion"] == "1.0" and event["type"] == "ingestion.run.completed"
    assert event["subject"] == "to-the-webhook" and event["source"] == "urn:fanout" and event["data"] == queued
    assert status["state"] == "completed"
    assert status["event_webhook"] == {"state": "delivered", "deliveries": 1, "reason": "HTTP 200"}
    assert SECRET not in json.dumps(status) and SECRET not in caplog.text
    receiver.stop()


def test_a_webhook_that_fails_first_then_accepts_gets_the_event_once(on_loop, functions, probe, webhook_env):
    receiver = Scripted([503, 500, 200])
    webhook_env(receiver)

    status = run_to_its_end(on_loop, functions, probe, "second-time-lucky")

    assert status["event_webhook"] == {"state": "delivered", "deliveries": 1, "reason": "HTTP 200"}
    bodies = [json.loads(body) for _, body in receiver.posts]
    assert len(bodies) == 3 and len({event["id"] for event in bodies}) == 1  # one id: the receiver drops repeats
    receiver.stop()


@pytest.mark.parametrize(("statuses", "reason"), [([302], "HTTP 302: a redirect")])  # a 404 alike: see the last test
def test_a_refusing_or_redirecting_webhook_is_recorded_undelivered_at_once_and_never_retried(
    on_loop, functions, probe, webhook_env, statuses, reason
):
    receiver = Scripted(statuses)
    webhook_env(receiver)

    run_id = f"refused-{statuses[0]}"
    status = run_to_its_end(on_loop, functions, probe, run_id)
    sweep_later(on_loop)
    sweep_later(on_loop)

    assert len(receiver.posts) == 1 and status["state"] == "completed"
    webhook = status_of(on_loop, functions, run_id)["event_webhook"]
    assert webhook["state"] == "undelivered" and webhook["reason"].startswith(reason)
    assert SECRET not in webhook["reason"]
    receiver.stop()


def test_a_webhook_failing_forever_is_retried_by_sweeps_within_bounds_then_left(on_loop, functions, probe,
                                                                                  webhook_env):  # fmt: skip
    receiver = Scripted([500])
    webhook_env(receiver, RUN_EVENTS_WEBHOOK_ATTEMPTS="2", RUN_EVENTS_WEBHOOK_DELIVERIES="3")

    status = run_to_its_end(on_loop, functions, probe, "down-for-good")
    assert status["event_webhook"]["state"] == "pending" and len(receiver.posts) == 2
    for _ in range(4):  # the third delivery gives up; the sweeps after it send nothing
        sweep_later(on_loop)

    final = status_of(on_loop, functions, "down-for-good")
    assert len(receiver.posts) == 2 * 3
    assert final["state"] == "completed" and final["finished_at"] == status["finished_at"]
    assert final["event_webhook"]["state"] == "undelivered" and final["event_webhook"]["deliveries"] == 3
    assert "gave up after 3 deliveries" in final["event_webhook"]["reason"]
    receiver.stop()


def test_a_hanging_webhook_is_cut_off_and_the_run_carries_on(on_loop, functions, probe,
                                                                                     webhook_env, caplog):  # fmt: skip
    released = threading.Event()

    def hang(handler) -> None:  # answers 200 long after the timeout (or when the test ends)
        released.wait(30)
        handler.send_response(200)
        handler.end_headers()

    hanging = LoopbackApi(respond=hang)
    webhook_env(hanging, RUN_EVENTS_WEBHOOK_ATTEMPTS="2")
    caplog.set_level(logging.INFO)
    started = time.monotonic()

    status = run_to_its_end(on_loop, functions, probe, "hung-up")

    assert time.monotonic() - started < 10
    assert status["state"] == "completed" and len(hanging.posts) == 2
    assert status["event_webhook"]["state"] == "pending"
    assert status["event_webhook"]["reason"].startswith("no answer within 0.3 s")
    assert SECRET not in caplog.text and SECRET not in json.dumps(status)
    released.set()
    hanging.stop()


def test_a_webhook_slower_than_sweep_stale_seconds_gets_its_attempts_once_and_the_queue_the_event_once(
    on_loop, functions, probe, webhook_env
):
    """Each POST takes 0.8 s (503, three attempts): the delivery takes over 2 s, past SWEEP_STALE_SECONDS (1 s), and
    two sweeps run in the middle of it. The event was on the queue, and said so, before the delivery began, and the
    delivery under way is its deliverer's: no sweep sends either again (once, 6 POSTs and 2 events). A sweep after
    the delivery ended delivers again, the queue event still once."""

    def slow_then_fine(path: str, headers: Message) -> Answer:
        if len(receiver.posts) <= 3:
            time.sleep(0.8)
            return 503, {}, b""
        return 200, {}, b""

    receiver = LoopbackApi(slow_then_fine)
    runs = f"runs-{secrets.token_hex(6)}"  # the sweeps see this test's run only
    env = webhook_env(receiver, RUN_EVENTS_WEBHOOK_TIMEOUT="5", SWEEP_STALE_SECONDS="1", RUNS_CONTAINER=runs)
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "slow-webhook", "chunk_size": 300})))
    (name,) = probe.chunk_names("slow-webhook")

    async def posts(count: int) -> None:
        while len(receiver.posts) < count:
            await asyncio.sleep(0.01)

    async def sweeps_during_the_delivery() -> None:
        await posts(1)
        await asyncio.sleep(1.1)  # past SWEEP_STALE_SECONDS since the mark, and since the run last moved
        await functions["sweep_stalled_chunks"](TimerRequest())  # during the second POST
        await posts(3)
        await functions["sweep_stalled_chunks"](TimerRequest())  # during the third

    async def the_run_ends_while_sweeps_run() -> None:
        await asyncio.gather(functions["ingest_chunk"](delivered(probe, name)), sweeps_during_the_delivery())

    on_loop(the_run_ends_while_sweeps_run())

    assert len(events_of(probe, env)) == 1 and len(receiver.posts) == 3
    status = status_of(on_loop, functions, "slow-webhook")
    assert status["event_webhook"] == {"state": "pending", "deliveries": 1, "reason": "HTTP 503"}
    sweep_later(on_loop)
    assert len(receiver.posts) == 4 and events_of(probe, env) == []
    assert status_of(on_loop, functions, "slow-webhook")["event_webhook"] == {
        "state": "delivered", "deliveries": 2, "reason": "HTTP 200"
    }  # fmt: skip
    assert len({json.loads(body)["id"] for _, body in receiver.posts}) == 1
    receiver.stop()


STATUSES = st.sampled_from([200, 201, 204, 301, 302, 307, 400, 401, 403, 404, 410, 408, 429, 500, 502, 503, 504])


@pytest.fixture(scope="module")
def receiver():
    api = Scripted([200])
    yield api
    api.stop()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(STATUSES, min_size=1, max_size=5), attempts=st.integers(1, 4))
def test_a_delivery_posts_until_an_answer_settles_it_and_never_past_its_attempts(receiver, script, attempts):
    """For any answers: POSTs stop at the first 2xx (delivered), redirect or other 4xx (undelivered), else
    after `attempts` (pending, to be delivered again by a sweep); never more."""
    receiver.play(script)
    settings_ = Settings.from_env({
        "RUN_EVENTS_WEBHOOK": receiver.url, "RUN_EVENTS_WEBHOOK_ATTEMPTS": str(attempts),
        "RUN_EVENTS_WEBHOOK_RETRY_DELAY": "0",
    })  # fmt: skip
    event = {"run_id": "r", "state": "failed", "finished_at": "2026-01-01T00:00:00Z"}
    delivery = asyncio.run(deliver(settings_.webhook, event, settings_.network))
    answers = [*script, *[script[-1]] * attempts][:attempts]
    settling = next((n for n, status in enumerate(answers, 1) if status not in (408, 429) and status < 500), None)
    assert len(receiver.posts) == (settling or attempts)
    expected = "pending" if settling is None else ("delivered" if answers[settling - 1] < 300 else "undelivered")
    assert delivery.state == expected


def test_a_pending_delivery_is_recorded_undelivered_once_the_webhook_is_turned_off(
    on_loop, functions, probe, webhook_env, monkeypatch
):
    down = Scripted([503])
    webhook_env(down, RUN_EVENTS_WEBHOOK_ATTEMPTS="1")
    assert run_to_its_end(on_loop, functions, probe, "turned-off")["event_webhook"]["state"] == "pending"
    monkeypatch.delenv("RUN_EVENTS_WEBHOOK")  # the operator turns the webhook off
    sweep_later(on_loop)
    webhook = status_of(on_loop, functions, "turned-off")["event_webhook"]
    down.stop()
    assert webhook["state"] == "undelivered" and "RUN_EVENTS_WEBHOOK is no longer set" in webhook["reason"]


def test_a_sweep_ends_within_its_time_budget_whatever_the_webhook_does(
    on_loop, functions, probe, webhook_env, monkeypatch
):
    released = threading.Event()
    hanging = LoopbackApi(respond=lambda handler: released.wait(30))
    webhook_env(hanging, RUN_EVENTS_WEBHOOK_TIMEOUT="2", RUN_EVENTS_WEBHOOK_ATTEMPTS="2", SWEEP_TIME_BUDGET="1",
                RUNS_CONTAINER=f"runs-{secrets.token_hex(6)}")  # fmt: skip
    assert run_to_its_end(on_loop, functions, probe, "budgeted")["event_webhook"]["state"] == "pending"
    started = time.monotonic()
    sweep_later(on_loop)
    took = time.monotonic() - started
    webhook = status_of(on_loop, functions, "budgeted")["event_webhook"]
    released.set()
    hanging.stop()
    assert took < 3.5, f"a sweep with a 1 s budget took {took:.1f} s"  # a delivery alone takes 4 s here
    assert webhook["state"] == "pending" and "SWEEP_TIME_BUDGET" in webhook["reason"], webhook


def test_a_purge_waits_for_a_webhook_delivery_still_owed(on_loop, functions, probe, webhook_env):
    down = Scripted([503, 503, 503, 200])
    webhook_env(down, RUN_EVENTS_WEBHOOK_ATTEMPTS="3")
    assert run_to_its_end(on_loop, functions, probe, "owed")["event_webhook"]["state"] == "pending"

    refused = on_loop(functions["delete_ingestion"](delete_request("owed")))
    sweep_later(on_loop)  # the webhook is back: the sweep delivers
    purged = on_loop(functions["delete_ingestion"](delete_request("owed")))
    down.stop()

    assert refused.status_code == 409 and "still owed to the webhook" in body_of(refused)["detail"]
    assert purged.status_code == 200 and len(down.posts) == 4
