"""Sources that page: every pagination mode, chunking continued across invocations on the control
queue, and a whole paged run through `python -m fanout run`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

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
    api = DemoApi(count=1_000_000, page_size=1000, **api_options).start()
    yield api, {"SOURCE_PAGINATION": api_options.get("pagination", "none"), **settings}
    api.stop()


def control_queue(azurite) -> QueueClient:
    return QueueClient.from_connection_string(
        azurite.connection_string, "chunking-continuations", message_decode_policy=TextBase64DecodePolicy()
    )


def chunk_lines(probe, run_id: str) -> Iterator[str]:
    for name in probe.chunk_names(run_id):
        yield from probe.chunks.download_blob(name).readall().decode().splitlines()


@pytest.mark.own_azurite
@pytest.mark.parametrize("paged_api", ["none", "next-link", "cursor", "page"], indirect=True)
def test_a_million_ids_chunk_across_continuations_each_once_in_order(
    on_loop, functions, probe, azurite, monkeypatch, paged_api
):
    api, settings = paged_api
    for key, value in {**settings, "SOURCE_URL": api.url, "CHUNKING_TIME_BUDGET": "0", "CHUNK_SIZE": "20000"}.items():
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

    # The budget stops each invocation after one chunk; one unpaged response is read in one go; page
    # mode learns it is done only from an empty page, which takes one more continuation.
    expected = {"none": 0, "page": 1_000_000 // 20_000}.get(settings["SOURCE_PAGINATION"], 1_000_000 // 20_000 - 1)
    assert continuations == expected
    status = body_of(on_loop(functions["get_ingestion_status"](get_status("million"))))
    assert (status["chunks"]["total"], status["messages"]["fetched"]) == (50, 1_000_000)
    expected = (json.dumps(demo_id(index)) for index in range(1_000_000))
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
    api = DemoApi(count=1_000_000, page_size=1000, objects=True, **api_options).start()
    try:
        items_path = settings["SOURCE_ITEMS_PATH"] + "[].id"  # object items: take each one's id
        source_url = f"{api.url}?count=10000"  # the URL's own query survives the pagination parameters
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
    assert json.loads(result.stdout.splitlines()[-1])["messages_enqueued"] == 10_000
    assert sorted(probe.drain()) == sorted(demo_ids(10_000))
