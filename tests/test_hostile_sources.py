"""A source that misbehaves fails its run with a reason that names the setting to check, or is handed
on in time; it never loops forever, holds an answer past its limits, or crashes with a bare 500."""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
import time

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from fanout.demo_api import DemoApi, Faults, demo_ids
from testkit.http_requests import body_of, post_ingestion, status_of
from testkit.loopback_api import LoopbackApi

PAGED = {
    "cursor": {"SOURCE_PAGINATION": "cursor", "SOURCE_ITEMS_PATH": "items"},
    "page": {"SOURCE_PAGINATION": "page", "SOURCE_ITEMS_PATH": "data"},
    "next-link": {"SOURCE_PAGINATION": "next-link", "SOURCE_ITEMS_PATH": "data", "SOURCE_NEXT_PATH": "links.next"},
}
ANSWER_WITHIN = 30.0  # seconds: a guard, so that a source that never ends fails the test instead of hanging it


def fixed_answer(body: bytes, headers: dict[str, str] | None = None, status: int = 200) -> LoopbackApi:
    """A loopback API that answers every GET with the same status, headers and body."""
    answer = (status, {"Content-Type": "application/json", **(headers or {})}, body)
    return LoopbackApi(lambda path, request_headers: answer)


@pytest.fixture
def source(app_env) -> dict[str, str]:
    """Settings every test here starts from: a control queue of its own (continuations of no other run)."""
    return {"CONTROL_QUEUE": f"continuations-{secrets.token_hex(4)}"}


def configure(monkeypatch, **settings: str) -> None:
    for key, value in settings.items():
        monkeypatch.setenv(key, value)


def start(on_loop, functions, run_id: str) -> tuple[func.HttpResponse, float]:
    """POSTs a run through the app's HTTP function; its answer and how long it took."""
    started = time.monotonic()
    answer = functions["start_ingestion"](post_ingestion({"run_id": run_id}))
    response = on_loop(asyncio.wait_for(answer, ANSWER_WITHIN))
    return response, time.monotonic() - started


def continue_until_done(on_loop, functions, azurite, control_queue: str, run_id: str, rounds: int = 50) -> list[float]:
    """Runs each continuation the run leaves on its control queue (at most `rounds`); how long each took."""
    queue = QueueClient.from_connection_string(
        azurite.connection_string, control_queue, message_decode_policy=TextBase64DecodePolicy()
    )
    took: list[float] = []
    while status_of(on_loop, functions, run_id)["state"] == "chunking":
        assert len(took) < rounds, f"still chunking after {rounds} continuations"
        (message,) = queue.receive_messages(max_messages=1)
        started = time.monotonic()
        carry_on = functions["continue_chunking"](func.QueueMessage(body=message.content.encode()))
        on_loop(asyncio.wait_for(carry_on, ANSWER_WITHIN))
        took.append(time.monotonic() - started)
        queue.delete_message(message)
    return took


def chunk_lines(probe, run_id: str) -> list[str]:
    return [
        line
        for name in probe.chunk_names(run_id)
        for line in probe.chunks.download_blob(name).readall().decode().splitlines()
    ]


# --- 2. a source that repeats ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "misconfigured", "reason"),
    [
        ("cursor", {"SOURCE_CURSOR_PARAM": "after"}, "check SOURCE_CURSOR_PARAM='after'"),
        ("page", {"SOURCE_PAGE_PARAM": "p"}, "check SOURCE_PAGE_PARAM='p'"),
        ("next-link", {"SOURCE_NEXT_PATH": "links.self"}, "check SOURCE_NEXT_PATH='links.self'"),
    ],
)
def test_a_source_that_answers_the_same_page_again_fails_the_run_naming_the_setting(
    on_loop, functions, monkeypatch, source, mode, misconfigured, reason
):
    api = DemoApi(count=10_000, pagination=mode, page_size=100).start()
    try:  # the API reads `cursor` / `page`; a misnamed parameter gets page 1 again, and so does a self link
        configure(monkeypatch, **{**source, **PAGED[mode], **misconfigured}, SOURCE_URL=api.url, CHUNK_SIZE="50")
        response, _ = start(on_loop, functions, f"repeats-{mode}")
    finally:
        api.stop()

    assert response.status_code == 502, response.get_body()
    assert reason in body_of(response)["detail"]
    assert api.requests <= 3  # found out at the first page that came back, not after thousands
    assert status_of(on_loop, functions, f"repeats-{mode}")["state"] == "failed"


def test_a_page_that_comes_back_is_noticed_across_continuations(on_loop, functions, azurite, monkeypatch, source):
    api = DemoApi(count=10_000, pagination="page").start()
    try:  # each continuation reads one page: the page before it goes with the run
        configure(monkeypatch, **source, **PAGED["page"], SOURCE_PAGE_PARAM="p", SOURCE_PAGE_SIZE="100",
                  SOURCE_URL=api.url, CHUNK_SIZE="100", CHUNKING_TIME_BUDGET="0")  # fmt: skip
        start(on_loop, functions, "repeats-continued")
        continue_until_done(on_loop, functions, azurite, source["CONTROL_QUEUE"], "repeats-continued", rounds=5)
    finally:
        api.stop()

    status = status_of(on_loop, functions, "repeats-continued")
    assert status["state"] == "failed"
    assert "answered the same 100 items as on the page before" in status["error"]
    assert "check SOURCE_PAGE_PARAM='p'" in status["error"]


def test_source_max_pages_fails_a_run_with_more_pages_across_continuations(
    on_loop, functions, azurite, monkeypatch, source
):
    api = DemoApi(count=10_000, pagination="cursor", page_size=100).start()
    try:
        configure(monkeypatch, **source, **PAGED["cursor"], SOURCE_URL=api.url, SOURCE_MAX_PAGES="35",
                  CHUNK_SIZE="1000", CHUNKING_TIME_BUDGET="0")  # fmt: skip
        response, _ = start(on_loop, functions, "max-pages")
        assert response.status_code == 202 and body_of(response)["state"] == "chunking"
        continue_until_done(on_loop, functions, azurite, source["CONTROL_QUEUE"], "max-pages")
    finally:
        api.stop()

    status = status_of(on_loop, functions, "max-pages")
    assert status["state"] == "failed"
    assert "more than SOURCE_MAX_PAGES=35 pages" in status["error"]
    assert status["messages"]["fetched"] == 3500  # the 35 pages read stay accounted for
    assert api.requests <= 35 + 3  # each continuation reads again at most the page it resumes in


def test_source_max_items_fails_a_run_with_more_items(on_loop, functions, demo_api, monkeypatch, source):
    configure(monkeypatch, **source, SOURCE_URL=f"{demo_api.url}?count=10000", SOURCE_MAX_ITEMS="2500")
    response, _ = start(on_loop, functions, "max-items")

    assert response.status_code == 502
    assert "more than SOURCE_MAX_ITEMS=2500 items" in body_of(response)["detail"]


# --- 4. deadlines ---------------------------------------------------------------------------------


def test_a_trickling_unpaged_source_fails_the_run_at_source_read_deadline(on_loop, functions, monkeypatch, source):
    api = DemoApi(count=100, faults=Faults(trickle=0.05)).start()  # 1 byte every 50 ms: 4 KB in 200 s
    try:
        configure(monkeypatch, **source, SOURCE_URL=api.url, SOURCE_TIMEOUT="3", SOURCE_READ_DEADLINE="2")
        response, took = start(on_loop, functions, "trickle-unpaged")
    finally:
        api.stop()

    assert response.status_code == 502
    assert "did not finish answering within SOURCE_READ_DEADLINE=2 s" in body_of(response)["detail"]
    assert took < 6


def test_a_trickling_page_does_not_hold_the_http_answer_past_the_budget(on_loop, functions, monkeypatch, source):
    api = DemoApi(count=1000, pagination="cursor", page_size=100, faults=Faults(trickle=0.05)).start()
    try:
        configure(monkeypatch, **source, **PAGED["cursor"], SOURCE_URL=api.url, SOURCE_TIMEOUT="3",
                  CHUNKING_TIME_BUDGET="1")  # fmt: skip
        response, took = start(on_loop, functions, "trickle-page")
    finally:
        api.stop()

    assert response.status_code == 202
    assert (body_of(response)["state"], body_of(response)["chunks"]) == ("chunking", 0)
    assert took < 4  # the budget, not the page (over 3 minutes)


@pytest.mark.parametrize("mode", ["cursor", "page"])
def test_slow_pages_hand_on_mid_chunk_and_every_id_lands_once_in_order(
    on_loop, functions, azurite, probe, monkeypatch, source, mode
):
    api = DemoApi(count=1000, pagination=mode, page_size=100, faults=Faults(delay=0.5)).start()
    run_id = f"slow-pages-{mode}"
    try:  # a chunk takes 5 pages, 2.5 s: longer than the budget
        configure(monkeypatch, **source, **PAGED[mode], SOURCE_URL=api.url, SOURCE_PAGE_SIZE="100",
                  CHUNK_SIZE="500", CHUNKING_TIME_BUDGET="0.5")  # fmt: skip
        response, took = start(on_loop, functions, run_id)
        continuations = continue_until_done(on_loop, functions, azurite, source["CONTROL_QUEUE"], run_id)
    finally:
        api.stop()

    assert response.status_code == 202 and body_of(response)["state"] == "chunking"
    assert took < 1.5  # answered at the budget, mid-chunk, without waiting for the chunk's five pages
    assert all(seconds < 4.5 for seconds in continuations)  # each stops at the first chunk past its budget
    assert [json.loads(line) for line in chunk_lines(probe, run_id)] == demo_ids(1000)
    status = status_of(on_loop, functions, run_id)
    assert (status["chunks"]["total"], status["messages"]["fetched"]) == (2, 1000)


def test_a_continuation_that_cannot_write_a_chunk_in_chunking_time_limit_fails_the_run(
    on_loop, functions, azurite, monkeypatch, source
):
    api = DemoApi(count=2000, pagination="cursor", page_size=100, faults=Faults(delay=0.5)).start()
    try:  # a chunk of 1,000 takes ten pages, 5 s
        configure(monkeypatch, **source, **PAGED["cursor"], SOURCE_URL=api.url, CHUNK_SIZE="1000",
                  CHUNKING_TIME_BUDGET="0.2", CHUNKING_TIME_LIMIT="1.5")  # fmt: skip
        response, _ = start(on_loop, functions, "time-limit")
        took = continue_until_done(on_loop, functions, azurite, source["CONTROL_QUEUE"], "time-limit")
    finally:
        api.stop()

    assert body_of(response)["state"] == "chunking"  # the HTTP call hands on; the continuation has longer
    status = status_of(on_loop, functions, "time-limit")
    assert status["state"] == "failed"
    assert "no chunk of 1000 items within CHUNKING_TIME_LIMIT=1.5 s" in status["error"]
    assert took and took[0] < 3


# --- 10. answers that used to crash ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "settings", "reason"),
    [
        (
            b"\x1f\x8b\x08\x00not gzip at all",
            {"Content-Encoding": "gzip"},
            {},
            "answered a body that does not decode (Content-Encoding: gzip)",
        ),
        (
            json.dumps({"data": ["a"], "links": {"next": 2}}).encode(),
            {},
            PAGED["next-link"],
            "the next link at SOURCE_NEXT_PATH='links.next' must be a string, got a number",
        ),
        (
            json.dumps({"data": ["a"], "links": {"next": {"href": "/ids?p=2"}}}).encode(),
            {},
            PAGED["next-link"],
            "the next link at SOURCE_NEXT_PATH='links.next' must be a string, got an object",
        ),
        (
            json.dumps({"data": ["a"], "links": {"next": "http://[::1"}}).encode(),
            {},
            PAGED["next-link"],
            "the next link 'http://[::1' is not a URL",
        ),
        (
            json.dumps({"items": ["a"], "next_cursor": {"after": "a"}}).encode(),
            {},
            PAGED["cursor"],
            "the cursor at SOURCE_CURSOR_PATH='next_cursor' must be a string or a number, got an object",
        ),
    ],
    ids=["bad-gzip", "next-link-number", "next-link-object", "next-link-invalid-url", "cursor-object"],
)
def test_an_answer_that_used_to_crash_fails_the_run_with_its_reason(
    on_loop, functions, monkeypatch, source, body, headers, settings, reason
):
    run_id = f"crash-{secrets.token_hex(3)}"
    answer = fixed_answer(body, headers)
    try:
        configure(monkeypatch, **source, **settings, SOURCE_URL=answer.url, SOURCE_MAX_ATTEMPTS="1")
        response, _ = start(on_loop, functions, run_id)
    finally:
        answer.stop()

    assert response.status_code == 502, response.get_body()
    assert reason in body_of(response)["detail"]
    assert status_of(on_loop, functions, run_id)["state"] == "failed"


def test_a_source_url_that_is_not_a_url_fails_the_run_with_its_reason(on_loop, functions, monkeypatch, source):
    configure(monkeypatch, **source, SOURCE_URL="http://[::1")
    response, _ = start(on_loop, functions, "invalid-url")

    assert response.status_code == 502, response.get_body()
    assert "source 'default': SOURCE_URL 'http://[::1' is not a URL" in body_of(response)["detail"]


@pytest.mark.parametrize("mode", ["none", "cursor"])
def test_integers_beyond_int64_are_kept_as_their_exact_digits(on_loop, functions, probe, monkeypatch, source, mode):
    numbers = [2**70, -(2**70), 2**63, 7]
    body = json.dumps(numbers if mode == "none" else {"items": numbers, "next_cursor": None}).encode()
    answer = fixed_answer(gzip.compress(body), {"Content-Encoding": "gzip"})
    try:
        configure(monkeypatch, **source, **PAGED.get(mode, {}), SOURCE_URL=answer.url)
        response, _ = start(on_loop, functions, f"big-integers-{mode}")
    finally:
        answer.stop()

    assert response.status_code == 202, response.get_body()
    assert chunk_lines(probe, f"big-integers-{mode}") == [str(number) for number in numbers]


# --- 6. chunk bytes -------------------------------------------------------------------------------


def test_a_chunk_closes_before_the_item_that_would_pass_chunk_max_bytes(on_loop, functions, probe, monkeypatch, source):
    items = [
        "a" * 700,
        "é" * 300,
        "\x01" * 100,
        2**70,
        {"id": "b" * 500, "seq": 1.5},
        "c",
        *["d" * 60] * 30,
        "e" * 1000,
    ]
    answer = fixed_answer(json.dumps(items, ensure_ascii=False).encode())
    try:
        configure(monkeypatch, **source, SOURCE_URL=answer.url, CHUNK_MAX_BYTES="1024")
        response, _ = start(on_loop, functions, "chunk-bytes")
    finally:
        answer.stop()

    assert response.status_code == 202, response.get_body()
    chunks = [probe.chunks.download_blob(name).readall() for name in probe.chunk_names("chunk-bytes")]
    lines = [line for chunk in chunks for line in chunk.splitlines(keepends=True)]
    assert [json.loads(line) for line in lines] == items
    assert all(len(chunk) <= 1024 for chunk in chunks)
    ends = [sum(chunk.count(b"\n") for chunk in chunks[: index + 1]) for index in range(len(chunks) - 1)]
    assert all(len(chunks[index]) + len(lines[end]) > 1024 for index, end in enumerate(ends))  # closed only when full


def test_chunk_boundaries_by_bytes_are_the_same_across_continuations(
    on_loop, functions, azurite, probe, monkeypatch, source
):
    api = DemoApi(count=100, pagination="cursor", page_size=7, item_bytes=300).start()
    try:  # 303 bytes a line: 6 in a chunk of 2,048 bytes, a chunk ending mid-page
        configure(monkeypatch, **source, **PAGED["cursor"], SOURCE_URL=api.url, CHUNK_MAX_BYTES="2048",
                  CHUNKING_TIME_BUDGET="0")  # fmt: skip
        start(on_loop, functions, "bytes-continued")
        continue_until_done(on_loop, functions, azurite, source["CONTROL_QUEUE"], "bytes-continued")
    finally:
        api.stop()

    chunks = [probe.chunks.download_blob(name).readall() for name in probe.chunk_names("bytes-continued")]
    assert [chunk.count(b"\n") for chunk in chunks] == [6] * 16 + [4]
    assert [json.loads(line) for chunk in chunks for line in chunk.splitlines()] == [
        api.item(index) for index in range(100)
    ]


def test_text_that_utf8_cannot_hold_fails_the_run_with_its_reason(on_loop, functions, monkeypatch, source):
    answer = fixed_answer(b'{"items": ["a", "\\ud800"], "next_cursor": null}')
    try:
        configure(monkeypatch, **source, **PAGED["cursor"], SOURCE_URL=answer.url)
        response, _ = start(on_loop, functions, "lone-surrogate")
    finally:
        answer.stop()

    assert response.status_code == 502, response.get_body()
    assert "the first page: item 2 ('\"\\\\ud800\"') holds the lone surrogate \\ud800" in body_of(response)["detail"]
