"""Sources that page: every pagination mode, chunking continued across invocations on the control
queue, and a whole paged run through `python -m fanout run`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from chunking.chunker import start_chunking
from chunking.continuation import continue_chunking
from chunking.request import IngestionRequest
from core.context import Context, app_context
from core.contract import Continuation
from core.run_store import RunRecord
from core.settings import Settings
from fanout.demo_api import DemoApi, Faults, demo_id, demo_ids
from testkit.cli_runner import cli
from testkit.http_requests import body_of, get_status, post_ingestion

MODES = {
    "none": ({}, {}),
    "next-link": ({"pagination": "next-link"}, {"SOURCE_ITEMS_PATH": "data", "SOURCE_NEXT_PATH": "links.next"}),
    "next-link (Link header)": ({"pagination": "next-link"}, {"SOURCE_ITEMS_PATH": "data"}),
    "cursor": (
        {"pagination": "cursor"},
        {"SOURCE_ITEMS_PATH": "items", "SOURCE_CURSOR_PATH": "next_cursor", "SOURCE_CURSOR_PARAM": "cursor"},
    ),
    "page": (
        {"pagination": "page"},
        {
            "SOURCE_ITEMS_PATH": "data",
            "SOURCE_PAGE_PARAM": "page",
            "SOURCE_PAGE_SIZE_PARAM": "per_page",
            "SOURCE_PAGE_SIZE": "1000",
        },
    ),
}


@pytest.fixture
def paged_api(request) -> Iterator[tuple[DemoApi, dict[str, str]]]:
    api_options, settings = MODES[request.param]
    api = DemoApi(count=300_000, page_size=1000, **api_options).start()
    yield api, {"SOURCE_PAGINATION": api_options.get("pagination", "none"), **settings}
    api.stop()


def control_queue(azurite, name: str = "chunking-continuations") -> QueueClient:
    return QueueClient.from_connection_string(
        azurite.connection_string, name, message_decode_policy=TextBase64DecodePolicy()
    )


def chunk_lines(probe, run_id: str) -> Iterator[str]:
    for name in probe.chunk_names(run_id):
        yield from probe.chunks.download_blob(name).readall().decode().splitlines()


@pytest.mark.own_azurite
@pytest.mark.parametrize("paged_api", ["none", "next-link", "cursor", "page"], indirect=True)
def test_300_000_ids_chunk_across_fifty_continuations_each_once_in_order(
    on_loop, functions, probe, azurite, monkeypatch, paged_api
):
    api, settings = paged_api
    for key, value in {**settings, "SOURCE_URL": api.url, "CHUNKING_TIME_BUDGET": "0", "CHUNK_SIZE": "6000"}.items():
        monkeypatch.setenv(key, value)
    started = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "million"})))
    assert started.status_code == 202, started.get_body()

    continuations = 0
    control = control_queue(azurite)
    while body_of(on_loop(functions["get_ingestion_status"](get_status("million"))))["state"] == "chunking":
        (message,) = control.receive_messages(max_messages=1)
        on_loop(functions["continue_chunking"](func.QueueMessage(body=message.content.encode())))
        control.delete_message(message)
        continuations += 1

    # A budget of 0 stops the HTTP call before its first chunk and each continuation after its first;
    # one unpaged response is read in one go; page mode learns it is done only from an empty page,
    # which takes one more continuation.
    expected = {"none": 0, "page": 300_000 // 6000 + 1}.get(settings["SOURCE_PAGINATION"], 300_000 // 6000)
    assert continuations == expected
    status = body_of(on_loop(functions["get_ingestion_status"](get_status("million"))))
    assert (status["chunks"]["total"], status["messages"]["fetched"]) == (50, 300_000)
    expected = (json.dumps(demo_id(index)) for index in range(300_000))
    assert all(line == want for line, want in zip(chunk_lines(probe, "million"), expected, strict=True))


def test_a_continuation_delivered_twice_writes_no_chunk_twice_and_loses_none(
    on_loop, functions, probe, azurite, monkeypatch
):
    api = DemoApi(count=30_000, pagination="cursor", page_size=1000).start()
    try:
        for key, value in {**MODES["cursor"][1], "SOURCE_PAGINATION": "cursor", "SOURCE_URL": api.url,
                           "CHUNKING_TIME_BUDGET": "0", "CHUNK_SIZE": "5000"}.items():  # fmt: skip
            monkeypatch.setenv(key, value)
        on_loop(functions["start_ingestion"](post_ingestion({"run_id": "twice-continued"})))
        control = control_queue(azurite)
        (first,) = control.receive_messages(max_messages=1)
        duplicate = func.QueueMessage(body=first.content.encode())
        on_loop(functions["continue_chunking"](duplicate))
        on_loop(functions["continue_chunking"](duplicate))  # the same message again: stale, does nothing
        control.delete_message(first)
        while messages := list(control.receive_messages(max_messages=1)):
            on_loop(functions["continue_chunking"](func.QueueMessage(body=messages[0].content.encode())))
            control.delete_message(messages[0])
    finally:
        api.stop()

    assert [json.loads(line) for line in chunk_lines(probe, "twice-continued")] == demo_ids(30_000)
    status = body_of(on_loop(functions["get_ingestion_status"](get_status("twice-continued"))))
    assert (status["chunks"]["total"], status["messages"]["fetched"]) == (6, 30_000)


@pytest.fixture
def fast_and_slow(app_env) -> Iterator[tuple[DemoApi, DemoApi, dict[str, str]]]:
    """The same 6,000 IDs paged by cursor from two APIs, one taking a second a page; settings for either."""
    fast = DemoApi(count=6_000, pagination="cursor", page_size=1000).start()
    slow = DemoApi(count=6_000, pagination="cursor", page_size=1000, faults=Faults(delay=1.0)).start()
    paged = {**app_env, **MODES["cursor"][1], "SOURCE_PAGINATION": "cursor", "CHUNK_SIZE": "200",
             "CHUNKING_TIME_BUDGET": "200", "CONTROL_QUEUE": f"continuations-{app_env['QUEUE_NAME']}"}  # fmt: skip
    yield fast, slow, paged
    fast.stop()
    slow.stop()


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.02)


async def paused_after_one_chunk(fast_and_slow, run_id: str) -> tuple[Context, Context, bytes]:
    """Contexts reading the fast and the slow API, and the continuation of a run paused after its first chunk."""
    fast, slow, paged = fast_and_slow
    fast_ctx = await app_context(Settings.from_env({**paged, "SOURCE_URL": fast.url}))
    slow_ctx = await app_context(Settings.from_env({**paged, "SOURCE_URL": slow.url}))
    record, _ = await start_chunking(fast_ctx, IngestionRequest("default", 200, run_id), budget=0)
    return fast_ctx, slow_ctx, Continuation(run_id, record.resume).encode().encode()


async def cancelled(task: asyncio.Task) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_continuation_delivered_twice_is_dropped_while_the_first_holds_the_run_and_every_id_lands_once(
    on_loop, fast_and_slow, probe, azurite
):
    """One continuation delivered twice: while the slow invocation holds the run's claim, the duplicate finds
    it claimed and does nothing; the first, interrupted, lets the claim go and hands the rest on."""
    _, slow, paged = fast_and_slow

    async def race() -> tuple[Context, RunRecord | None]:
        fast_ctx, slow_ctx, continuation = await paused_after_one_chunk(fast_and_slow, "raced")
        interrupted = asyncio.create_task(continue_chunking(slow_ctx, continuation))
        await until(lambda: slow.requests >= 1)  # it holds the run's claim and waits for its first page
        duplicate = await continue_chunking(fast_ctx, continuation)
        await until(lambda: slow.requests >= 3)
        await cancelled(interrupted)
        return fast_ctx, duplicate

    ctx, duplicate = on_loop(race())
    assert duplicate is None
    record = on_loop(ctx.runs.get("raced"))
    assert (record.state, record.owner) == ("chunking", None)

    control = control_queue(azurite, paged["CONTROL_QUEUE"])
    while messages := list(control.receive_messages(max_messages=1)):
        on_loop(continue_chunking(ctx, messages[0].content.encode()))
        control.delete_message(messages[0])
    assert [json.loads(line) for line in chunk_lines(probe, "raced")] == demo_ids(6_000)
    assert on_loop(ctx.runs.get("raced")).state == "chunked"


def test_an_interrupted_continuation_keeps_its_chunks_and_hands_the_rest_on(on_loop, fast_and_slow, probe, azurite):
    _, slow, paged = fast_and_slow

    async def interrupt() -> tuple[Context, RunRecord]:
        fast_ctx, slow_ctx, continuation = await paused_after_one_chunk(fast_and_slow, "handed-on")
        interrupted = asyncio.create_task(continue_chunking(slow_ctx, continuation))
        await until(lambda: slow.requests >= 3)
        await cancelled(interrupted)
        return fast_ctx, await fast_ctx.runs.get("handed-on")

    ctx, record = on_loop(interrupt())
    assert record.state == "chunking" and record.messages == record.chunks * 200 >= 1_000
    assert len(probe.chunk_names("handed-on")) >= record.chunks

    control = control_queue(azurite, paged["CONTROL_QUEUE"])
    while messages := list(control.receive_messages(max_messages=1)):  # the first pause's (stale), then the rest
        on_loop(continue_chunking(ctx, messages[0].content.encode()))
        control.delete_message(messages[0])
    assert [json.loads(line) for line in chunk_lines(probe, "handed-on")] == demo_ids(6_000)
    assert on_loop(ctx.runs.get("handed-on")).state == "chunked"


def test_a_next_link_to_another_host_fails_the_run_with_that_reason(on_loop, functions, monkeypatch, app_env):
    api = DemoApi(count=5000, pagination="next-link", faults=Faults(foreign_next=True)).start()
    try:
        for key, value in {**MODES["next-link"][1], "SOURCE_PAGINATION": "next-link", "SOURCE_URL": api.url}.items():
            monkeypatch.setenv(key, value)
        response = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "foreign"})))
    finally:
        api.stop()

    assert response.status_code == 502
    assert "points to another host; only 127.0.0.1 is followed" in body_of(response)["detail"]
    assert body_of(response)["messages"] == 1000  # the first page's items stay accounted for


@pytest.mark.own_azurite
@pytest.mark.parametrize("mode", ["next-link", "cursor", "page"])
def test_a_paged_run_through_the_cli_lands_exactly_the_source_ids(app_env, probe, mode):
    api_options, settings = MODES[mode]
    api = DemoApi(count=1_000_000, page_size=300, objects=True, **api_options).start()
    try:
        items_path = settings["SOURCE_ITEMS_PATH"] + "[].id"  # object items: take each one's id
        source_url = f"{api.url}?count=3000"  # the URL's own query survives the pagination parameters
        env = {
            **app_env,
            **settings,
            "SOURCE_PAGINATION": mode,
            "SOURCE_URL": source_url,
            "SOURCE_ITEMS_PATH": items_path,
        }
        result = cli("run", "--json", env=env)
    finally:
        api.stop()

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["messages_enqueued"] == 3000
    assert sorted(probe.drain()) == sorted(demo_ids(3000))
