"""Fan-in and tolerated failures: exactly one completion event per run, however many invocations finish at
once; failed chunks past `max_failed_chunks` fail the run at once, within it the run completes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from types import SimpleNamespace
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.blob.aio import BlobServiceClient as AsyncBlobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core.run_events as run_events
import core.webhook as webhook_module
from core.context import app_context
from core.contract import ChunkRef, run_event_mark_blob
from core.retry import RetryPolicy
from core.run_events import settle_run
from core.run_store import RunRecord, RunStore, utc_now
from fanout.demo_api import demo_ids
from ingestion.chunk import ingest_chunk
from runs.sweep import sweep
from testkit.chunked_runs import delivered
from testkit.http_requests import (
    body_of,
    chunk_blob,
    delete_request,
    get_status,
    post_ingestion,
    post_redrive,
    run_queued,
    status_of,
)
from testkit.loopback_api import Answer, LoopbackApi
from testkit.run_events import events_of


@pytest.fixture
def ids_300(monkeypatch, app_env) -> dict[str, str]:
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "300"))
    return app_env


def test_racing_finishers_send_exactly_one_completion_event(on_loop, functions, probe, ids_300):
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "racing", "chunk_size": 50})))
    blobs = [delivered(probe, name) for name in probe.chunk_names("racing") * 2]

    async def every_chunk_twice_at_once() -> None:  # six chunks, each delivered twice, all at the same moment
        await asyncio.gather(*(functions["ingest_chunk"](blob) for blob in blobs))

    on_loop(every_chunk_twice_at_once())

    (event,) = events_of(probe, ids_300)
    assert event["run_id"] == "racing" and event["state"] == "completed"
    assert event["chunks"] == {"total": 6, "ingested": 6, "failed": 0, "ingesting": 0, "stopped": 0, "waiting": 0}
    assert event["messages"] == {"fetched": 300, "enqueued": 300, "send_retries": 0, "queue_messages": 300}
    assert event["failed_chunks"] == [] and event["created_at"] <= event["completed_at"] <= event["finished_at"]
    assert sorted(probe.drain()) == sorted(demo_ids(300))
    assert status_of(on_loop, functions, "racing")["finished_at"] == event["finished_at"]


def test_settling_a_run_many_times_at_once_sends_one_event(on_loop, functions, probe, azurite, ids_300):
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "settled-often", "chunk_size": 300})))
    (name,) = probe.chunk_names("settled-often")
    on_loop(functions["ingest_chunk"](delivered(probe, name)))
    assert len(events_of(probe, ids_300)) == 1
    runs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("ingestion-runs")
    runs.delete_blob(run_event_mark_blob("settled-often"))  # as if the event were never sent

    async def twelve_at_once() -> None:
        ctx = await app_context()
        await asyncio.gather(*(settle_run(ctx, "settled-often") for _ in range(12)))

    on_loop(twelve_at_once())

    assert [event["state"] for event in events_of(probe, ids_300)] == ["completed"]


@pytest.mark.parametrize(("tolerated", "final", "enqueued"), [(0, "failed", 100), (1, "completed", 200)])
def test_tolerated_failures_switch_the_final_state_at_the_threshold(
    on_loop, functions, probe, ids_300, tolerated, final, enqueued
):
    """Chunk 1 of 3 is malformed. Tolerating none, the run fails at once and chunk 2 then sends nothing;
    tolerating one, chunk 2 is sent and the run completes, chunk 1 listed as failed."""
    body = {"run_id": f"tolerate-{tolerated}", "chunk_size": 100, "max_failed_chunks": tolerated}
    on_loop(functions["start_ingestion"](post_ingestion(body)))
    first, broken, last = probe.chunk_names(body["run_id"])
    on_loop(functions["ingest_chunk"](delivered(probe, first)))
    on_loop(functions["ingest_chunk"](chunk_blob("chunks", broken, b"{broken\n", {"message_count": "1"})))
    assert status_of(on_loop, functions, body["run_id"])["state"] == ("failed" if tolerated == 0 else "ingesting")
    on_loop(functions["ingest_chunk"](delivered(probe, last)))

    status = status_of(on_loop, functions, body["run_id"])
    assert (status["state"], status["max_failed_chunks"]) == (final, tolerated)
    assert status["messages"]["enqueued"] == probe.queue_length() == enqueued
    assert [chunk["index"] for chunk in status["failed_chunks"]] == [1]
    (event,) = events_of(probe, ids_300)
    assert (event["state"], event["messages"]["enqueued"]) == (final, enqueued)
    assert event["failed_chunks"] == [{"index": 1, "error": status["failed_chunks"][0]["error"]}]
    assert "line 1 is not valid JSON" in event["failed_chunks"][0]["error"]


def test_a_failed_run_is_redriven_to_completion_with_a_second_event(on_loop, functions, probe, ids_300):
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "fail-then-fix", "chunk_size": 100})))
    first, broken, last = probe.chunk_names("fail-then-fix")
    on_loop(functions["ingest_chunk"](chunk_blob("chunks", broken, b"{broken\n", {"message_count": "1"})))
    for name in (first, last):
        on_loop(functions["ingest_chunk"](delivered(probe, name)))  # the run failed already: both stop at once
    assert probe.queue_length() == 0
    assert [event["state"] for event in events_of(probe, ids_300)] == ["failed"]

    scheduled = body_of(on_loop(functions["redrive_ingestion"](post_redrive("fail-then-fix"))))["scheduled"]
    assert status_of(on_loop, functions, "fail-then-fix")["state"] == "ingesting"  # not failed while redriven
    run_queued(on_loop, functions["redrive_chunk"], probe.queue_client(ids_300["REDRIVE_QUEUE"]))

    assert scheduled == [0, 1, 2]
    assert sorted(probe.drain()) == sorted(demo_ids(300))  # the "broken" chunk blob itself was never broken
    assert [event["state"] for event in events_of(probe, ids_300)] == ["completed"]


def test_a_bad_max_failed_chunks_answers_400_naming_the_field(on_loop, functions, app_env):
    for value in (-1, "2", 1.5, True, 10**7):
        answer = on_loop(functions["start_ingestion"](post_ingestion({"max_failed_chunks": value})))
        assert answer.status_code == 400, value
        assert body_of(answer)["field"] == "max_failed_chunks"


def test_status_answers_202_with_retry_after_while_the_run_goes_on_and_200_once_it_ends(
    on_loop, functions, probe, ids_300
):
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "polled", "chunk_size": 150})))
    first, second = probe.chunk_names("polled")
    on_loop(functions["ingest_chunk"](delivered(probe, first)))

    going = on_loop(functions["get_ingestion_status"](get_status("polled")))
    on_loop(functions["ingest_chunk"](delivered(probe, second)))
    done = on_loop(functions["get_ingestion_status"](get_status("polled")))

    assert going.status_code == 202 and going.headers["Location"] == "/api/ingestions/polled"
    assert 2 <= int(going.headers["Retry-After"]) <= 30
    body = body_of(going)
    assert body["state"] == "ingesting" and body["messages_per_second"] > 0
    assert body["eta_seconds"] == pytest.approx(150 / body["messages_per_second"], abs=0.2)
    assert done.status_code == 200 and "Retry-After" not in done.headers
    assert body_of(done)["state"] == "completed" and body_of(done)["eta_seconds"] is None


class Died(BaseException):
    """The sender's process died here: nothing after it runs, no handler of the sender's either (no
    `except Exception` catches it)."""


SENDER_POINTS = ("marked", "enqueued", "recorded", "post-1", "post-2", "delivered")
ATTEMPTS, DELIVERIES, STALE, LATE = 2, 2, 1.0, 86_400.0


class Sender(RunStore):
    """The sender's run store, as real as any: at each point of the sender's way it calls `example.at(point)`,
    which sweeps there, as another process would meanwhile, and may kill the sender."""

    def __init__(self, blobs: AsyncBlobs, container: str, example: Interleaving) -> None:
        super().__init__(blobs, container)
        self._example, self._writes = example, 0

    async def mark_event(self, run_id: str, event: bytes) -> str | None:
        etag = await super().mark_event(run_id, event)
        await self._example.at("marked")
        return etag

    async def mark_sent(self, *args: Any, **kwargs: Any) -> Any:
        self._writes += 1  # the first: the event is on the queue; the second: the webhook's outcome
        await self._example.at("enqueued" if self._writes == 1 else "delivered")
        written = await super().mark_sent(*args, **kwargs)
        if self._writes == 1:
            if written:  # its webhook delivery is under way from here until it records the outcome, or dies
                self._example.delivering(+1)
            await self._example.at("recorded")
        return written


@dataclass
class Interleaving:
    """One example: where the sender dies (None: it lives), where sweeps run while it is alive (`during`, each with
    its clock SWEEP_STALE_SECONDS and a half ahead: the mark looks stale, a delivery under way within its time), and
    what the deliveries did."""

    die_at: str | None
    during: set[str]
    sweeping: bool = False
    sender_posts: int = 0
    under_way: int = 0  # webhook deliveries: the sender's from its claim to its end, a sweep's while it runs
    most_under_way: int = 0
    posts_per_delivery: list[int] = dataclass_field(default_factory=list)
    sweep: Callable[[float], Awaitable[None]] | None = None

    def delivering(self, change: int) -> None:
        self.under_way += change
        self.most_under_way = max(self.most_under_way, self.under_way)

    async def at(self, point: str) -> None:
        if point in self.during and self.sweep is not None:
            await self.sweep(STALE + 0.5)
        if point == self.die_at:
            raise Died(point)


@pytest.fixture
def interleavings(monkeypatch, app_env, probe):
    """The instruments, each example's `Interleaving` in `now[0]`: the sender's POSTs counted (each a point), and
    every delivery watched (how many at once, POSTs each); the webhook answers its script, the last answer for ever."""
    now: list[Interleaving] = []
    script: list[int] = [200]
    answered = []

    def answer(path: str, headers: object) -> Answer:
        answered.append(None)
        return script[min(len(answered), len(script)) - 1], {}, b""

    receiver = LoopbackApi(answer)
    real_post, real_deliver = webhook_module._post, run_events.deliver

    async def post(*args: Any) -> Any:
        outcome = await real_post(*args)
        example = now[0]
        if not example.sweeping:
            example.sender_posts += 1
            await example.at(f"post-{example.sender_posts}")
        return outcome

    async def watched(*args: Any) -> Any:
        example = now[0]
        by_a_sweep = example.sweeping  # the sender's counts from its claim on (Sender)
        example.delivering(by_a_sweep)
        before = len(receiver.posts)
        try:
            return await real_deliver(*args)
        finally:
            example.delivering(-by_a_sweep)
            example.posts_per_delivery.append(len(receiver.posts) - before)

    monkeypatch.setattr(webhook_module, "_post", post)
    monkeypatch.setattr(run_events, "deliver", watched)

    def play(statuses: list[int]) -> None:
        script[:] = statuses
        answered.clear()
        receiver.posts.clear()

    yield SimpleNamespace(now=now, play=play, receiver=receiver, env=app_env, probe=probe)
    receiver.stop()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    die_at=st.none() | st.sampled_from(SENDER_POINTS),
    during=st.sets(st.sampled_from(SENDER_POINTS), max_size=2),
    after=st.lists(st.sampled_from([0.0, STALE + 0.5, LATE]), max_size=3),
    answers=st.lists(st.sampled_from([200, 503]), min_size=1, max_size=4),
)
def test_whoever_dies_where_and_whenever_sweeps_run_the_event_goes_once_and_no_webhook_delivery_doubles(
    on_loop, interleavings, die_at, during, after, answers
):
    """A sender that may die after its mark, after its enqueue, after recording it, during or after its webhook
    delivery; sweeps while it lives (at SWEEP_STALE_SECONDS and a half), then sweeps at any time after, then
    enough late ones. The queue holds the event at least once, exactly once unless the sender died between its
    enqueue and recording it, or a sweep took over its mark before it recorded it; no two webhook deliveries run at
    once, none POSTs more than its attempts, at most RUN_EVENTS_WEBHOOK_DELIVERIES start; the mark ends `sent`,
    its webhook delivery settled."""
    example = Interleaving(die_at, during)
    interleavings.now[:] = [example]
    interleavings.play(answers)
    base = on_loop(app_context())
    container = f"runs-{secrets.token_hex(6)}"  # its sweeps see this example's run only
    webhook = replace(base.settings.webhook, url=interleavings.receiver.url, timeout=1.0, deliveries=DELIVERIES,
                      retry=RetryPolicy(ATTEMPTS, 0.0, 0.0))  # fmt: skip
    settings_ = replace(base.settings, runs_container=container, sweep_stale_seconds=STALE, webhook=webhook)
    ctx = replace(base, settings=settings_, runs=RunStore(base.clients.blobs, container))
    sender = replace(ctx, runs=Sender(base.clients.blobs, container, example))
    run_id = "interleaved"

    async def sweep_at(shift: float) -> None:
        example.sweeping = True
        try:
            await sweep(ctx, now=time.time() + shift)
        finally:
            example.sweeping = False

    async def the_run_ends() -> None:
        await base.clients.blobs.get_container_client(container).create_container()
        await ctx.runs.create(RunRecord(run_id, "default", 10, state="chunked", chunks=0, messages=0,
                                        created_at=utc_now()))  # fmt: skip
        example.sweep = sweep_at
        with contextlib.suppress(Died):
            await settle_run(sender, run_id)
        example.sweep = None  # the sender's way is over: its delivery too, if it had one
        example.delivering(-example.under_way)
        for shift in after:
            await sweep_at(shift)
        for _ in range(5):
            mark = await ctx.runs.event_mark(run_id)
            if mark is not None and not mark.sending and mark.webhook.get("webhook") != "pending":
                return
            await sweep_at(LATE)

    try:
        on_loop(the_run_ends())
        mark = on_loop(ctx.runs.event_mark(run_id))
    finally:
        on_loop(base.clients.blobs.delete_container(container))

    reached = set(SENDER_POINTS[: SENDER_POINTS.index(die_at) + 1] if die_at else SENDER_POINTS)
    taken_over_early = bool(during & reached & {"marked", "enqueued"})
    expected = (die_at != "marked") + (taken_over_early or die_at in ("marked", "enqueued"))
    events = events_of(interleavings.probe, interleavings.env)
    assert [event["run_id"] for event in events] == [run_id] * expected
    assert example.most_under_way == 1  # never a second delivery beside a live one
    assert all(posts <= ATTEMPTS for posts in example.posts_per_delivery)
    assert 1 <= len(example.posts_per_delivery) <= DELIVERIES
    assert len(interleavings.receiver.posts) == sum(example.posts_per_delivery)
    assert mark is not None and not mark.sending
    assert mark.webhook.get("webhook") in ("delivered", "undelivered") and "webhook_started" not in mark.webhook


class DiesAfterMarking(RunStore):
    """A real run store whose process dies right after it wrote the completion mark (`sending`)."""

    async def mark_event(self, run_id: str, event: bytes) -> str | None:
        await super().mark_event(run_id, event)
        raise Died("after the mark")


def test_a_purge_sends_the_event_a_dead_sender_left_marked_before_the_mark_goes(on_loop, functions, probe, ids_300):
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "purged-unsent", "chunk_size": 300})))
    ctx = on_loop(app_context())
    dying = replace(ctx, runs=DiesAfterMarking(ctx.clients.blobs, ctx.settings.runs_container))
    with contextlib.suppress(Died):
        on_loop(ingest_chunk(dying, ChunkRef("purged-unsent", 0, on_loop(ctx.runs.get("purged-unsent")).generation)))
    assert status_of(on_loop, functions, "purged-unsent")["state"] == "completed"  # marked, never sent

    assert on_loop(functions["delete_ingestion"](delete_request("purged-unsent"))).status_code == 200
    on_loop(sweep(on_loop(app_context()), now=time.time() + 86_400))
    assert [event["run_id"] for event in events_of(probe, ids_300)] == ["purged-unsent"]
