"""Listing runs: newest first, a page at a time with an opaque continuation, filtered by state and creation
time; bad parameters answer 400 problem+json naming the parameter."""

from __future__ import annotations

import base64
import json
import os
import secrets
import time

import pytest

from api.http import PROBLEM_JSON
from core.context import app_context
from testkit.chunked_runs import write_chunked_run
from testkit.cli_runner import cli
from testkit.http_requests import body_of, get_list, get_status, ingest_every_chunk, post_ingestion

RUNS = [f"listed-{n}" for n in range(5)]


@pytest.fixture
def five_runs(on_loop, functions, probe, monkeypatch, app_env) -> dict[str, str]:
    """Five runs of 10 IDs in a runs container of their own, created in order; runs 1 and 3 completed."""
    monkeypatch.setenv("RUNS_CONTAINER", f"runs-{secrets.token_hex(6)}")
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "10"))
    for run_id in RUNS:
        on_loop(functions["start_ingestion"](post_ingestion({"run_id": run_id})))
        time.sleep(0.01)  # creation times a few milliseconds apart
    for run_id in ("listed-1", "listed-3"):
        ingest_every_chunk(on_loop, functions, probe, run_id)
    return {**app_env, "RUNS_CONTAINER": os.environ["RUNS_CONTAINER"], "SOURCE_URL": os.environ["SOURCE_URL"]}


def listed(on_loop, functions, **params: str) -> tuple[list[str], str | None]:
    answer = on_loop(functions["list_ingestions"](get_list(**params)))
    assert answer.status_code == 200, answer.get_body()
    body = body_of(answer)
    return [run["run_id"] for run in body["runs"]], body["continuation"]


def every_page(on_loop, functions, **params: str) -> list[list[str]]:
    pages, continuation = [], None
    while True:
        runs, continuation = listed(
            on_loop, functions, **params, **({"continuation": continuation} if continuation else {})
        )
        pages.append(runs)
        if continuation is None:
            return pages


def every_run(on_loop, functions, **params: str) -> list[str]:
    return [run for page in every_page(on_loop, functions, **params) for run in page]


def test_runs_are_listed_newest_first_a_page_at_a_time(on_loop, functions, five_runs):
    assert every_page(on_loop, functions, limit="2") == [
        ["listed-4", "listed-3"],
        ["listed-2", "listed-1"],
        ["listed-0"],
    ]
    assert every_page(on_loop, functions) == [list(reversed(RUNS))]

    answer = body_of(on_loop(functions["list_ingestions"](get_list(limit="1"))))
    (run,) = answer["runs"]
    assert run["status_url"] == "http://localhost:7071/api/ingestions/listed-4"
    assert (run["state"], run["messages"], run["chunks"]["total"]) == (
        "ingesting",
        {"fetched": 10, "enqueued": 0, "send_retries": 0, "queue_messages": 0},
        1,
    )
    assert "failed_chunks" not in run


def test_runs_are_filtered_by_state_and_creation_time(on_loop, functions, five_runs):
    assert every_run(on_loop, functions, state="completed", limit="1") == ["listed-3", "listed-1"]
    assert every_run(on_loop, functions, state="ingesting") == ["listed-4", "listed-2", "listed-0"]
    assert every_page(on_loop, functions, state="cancelled") == [[]]

    created = body_of(on_loop(functions["get_ingestion_status"](get_status("listed-2"))))["created_at"]
    assert every_page(on_loop, functions, created_after=created) == [["listed-4", "listed-3"]]
    assert every_run(on_loop, functions, created_after=created, limit="1") == ["listed-4", "listed-3"]
    assert every_page(on_loop, functions, created_after="2999-01-01") == [[]]


def token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "done"}, "state"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"continuation": "not a token!"}, "continuation"),
        ({"continuation": token({"m": "2!a-marker-of-our-own", "o": 0, "n": 5}) + ".c2lnbmVk"}, "continuation"),
        ({"continuation": "x" * 3000 + ".c2lnbmVk"}, "continuation"),
    ],
)
def test_bad_list_parameters_answer_400_naming_the_parameter(on_loop, functions, five_runs, params, field):
    answer = on_loop(functions["list_ingestions"](get_list(**params)))

    assert (answer.status_code, answer.mimetype) == (400, PROBLEM_JSON), answer.get_body()
    assert body_of(answer)["field"] == field


def test_a_continuation_changed_by_its_holder_is_refused(on_loop, functions, five_runs):
    _, continuation = listed(on_loop, functions, limit="2")
    payload, signature = continuation.split(".")
    position = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    skipped = token({**position, "o": position["o"] + 1}) + "." + signature

    answer = on_loop(functions["list_ingestions"](get_list(limit="2", continuation=skipped)))

    assert (answer.status_code, body_of(answer)["field"]) == (400, "continuation")
    assert "not one this API gave" in body_of(answer)["detail"]
    assert listed(on_loop, functions, limit="2", continuation=continuation)[0] == ["listed-2", "listed-1"]


def test_cli_lists_runs_newest_first_filtered_by_state(five_runs):
    result = cli("list", "--state", "completed", "--json", env=five_runs)
    table = cli("list", "--limit", "2", env=five_runs)

    assert result.returncode == 0, result.stderr
    assert [run["run_id"] for run in json.loads(result.stdout)["runs"]] == ["listed-3", "listed-1"]
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["RUN", "ID", "STATE"]
    assert [line.split()[:2] for line in lines[1:3]] == [["listed-4", "ingesting"], ["listed-3", "completed"]]
    assert "more" in lines[3]


def test_a_run_whose_records_are_out_of_shape_is_named_unreadable_and_the_others_listed(on_loop, functions, probe):
    write_chunked_run(on_loop, probe, "healthy", ["a"])
    write_chunked_run(on_loop, probe, "odd", ["b"])
    ctx = on_loop(app_context())
    runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    out_of_shape = {"state": "weird", "index": "0", "sent": "0", "count": "1"}
    on_loop(runs.upload_blob("odd/chunks/000000", b"", metadata=out_of_shape, overwrite=True))

    answer = on_loop(functions["list_ingestions"](get_list()))

    assert answer.status_code == 200, body_of(answer)
    assert [run["run_id"] for run in body_of(answer)["runs"]] == ["healthy"]
    assert "odd/chunks/000000 is out of shape" in body_of(answer)["unreadable"]["odd"]


def test_an_unreadable_run_is_named_on_the_one_page_that_reaches_it(on_loop, functions, probe):
    ids = [f"paged-{n}" for n in range(4)]  # created oldest first: listed newest first
    for run_id in ids:
        write_chunked_run(on_loop, probe, run_id, ["a"])
        time.sleep(0.01)
    ctx = on_loop(app_context())
    runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    out_of_shape = {"state": "weird", "index": "0", "sent": "0", "count": "1"}
    on_loop(runs.upload_blob(f"{ids[0]}/chunks/000000", b"", metadata=out_of_shape, overwrite=True))

    listed, named = [], []
    page = body_of(on_loop(functions["list_ingestions"](get_list(limit="2"))))
    while True:
        listed += [run["run_id"] for run in page["runs"]]
        named += list(page["unreadable"])
        if not page["continuation"]:
            break
        page = body_of(on_loop(functions["list_ingestions"](get_list(limit="1", continuation=page["continuation"]))))
    ours = [run_id for run_id in listed if run_id in ids], [run_id for run_id in named if run_id in ids]
    assert ours == (ids[:0:-1], [ids[0]])  # other tests' runs share this Azurite's index
