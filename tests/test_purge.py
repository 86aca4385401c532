"""Retention: `DELETE /api/ingestions/{run_id}` and `python -m fanout purge` leave nothing of a finished run
(claim checks only once the messages they belong to have expired), and refuse a run that is still going."""

from __future__ import annotations

import json
import os
import time

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient

from api.http import PROBLEM_JSON
from core.context import app_context
from core.contract import ChunkRef, run_event_mark_blob
from core.run_store import RunStore
from ingestion.claim import claim_chunk
from ingestion.slots import take_slot
from runs import purge
from runs.redrive import redrive_chunk
from runs.sweep import sweep
from testkit.chunked_runs import BIG, delivered, write_chunked_run
from testkit.cli_runner import cli
from testkit.http_requests import (
    BASE,
    body_of,
    delete_request,
    get_status,
    ingest_every_chunk,
    post_cancel,
    post_ingestion,
    post_redrive,
    status_of,
)
from testkit.run_events import events_of


def delete_run(run_id: str) -> func.HttpRequest:
    return func.HttpRequest("DELETE", f"{BASE}/ingestions/{run_id}", route_params={"run_id": run_id}, body=b"")


def blobs_of(connection_string: str, run_id: str) -> dict[str, list[str]]:
    """Every blob of the run, in every container of the account: under its prefix, and its run index entry."""
    account = BlobServiceClient.from_connection_string(connection_string)
    found = {}
    for container in account.list_containers():
        blobs = account.get_container_client(container.name).list_blobs()
        names = [b.name for b in blobs if b.name.startswith(f"{run_id}/") or b.name.endswith(f"-{run_id}")]
        if names:
            found[container.name] = names
    return found


def finished_run_with_everything(on_loop, functions, probe, run_id: str) -> None:
    """A run ingested with a claim-checked message, a concurrency slot, a sweep log and its completion mark."""
    name = write_chunked_run(on_loop, probe, run_id, ["small", BIG])
    on_loop(functions["ingest_chunk"](delivered(probe, name)))
    ctx = on_loop(app_context())
    runs = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
    assert on_loop(take_slot(runs, run_id, 1, "someone", 60)) is not None
    on_loop(ctx.runs.save_sweep_log(run_id, {"sweeps": 1}, etag=None))
    assert set(blobs_of(probe.connection_string, run_id)) == {"chunks", "ingestion-runs", "large-messages"}


def test_purge_leaves_nothing_of_a_finished_run(on_loop, functions, probe, monkeypatch, azurite):
    monkeypatch.setenv("QUEUE_MESSAGE_TTL", "1")  # the claim check's message has expired a second later
    finished_run_with_everything(on_loop, functions, probe, "purged")
    time.sleep(1.1)

    answer = on_loop(functions["delete_ingestion"](delete_run("purged")))

    assert answer.status_code == 200, answer.get_body()
    assert body_of(answer) == {
        "run_id": "purged", "chunk_blobs": 1, "run_blobs": 6, "claim_checks_deleted": 1, "claim_checks_kept": 0,
    }  # fmt: skip  # record, index entry, chunk status, slot, sweep log, completion mark
    assert blobs_of(azurite.connection_string, "purged") == {}
    runs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("ingestion-runs")
    assert [b.name for b in runs.list_blobs(name_starts_with="_index/") if b.name.endswith("-purged")] == []
    assert on_loop(functions["get_ingestion_status"](get_status("purged"))).status_code == 404
    again = on_loop(functions["delete_ingestion"](delete_run("purged")))
    assert (again.status_code, again.mimetype) == (404, PROBLEM_JSON)


def test_purge_keeps_claim_checks_whose_messages_may_still_be_read(on_loop, functions, probe, azurite):
    finished_run_with_everything(on_loop, functions, probe, "kept-check")  # TTL: the service's 7 days

    answer = on_loop(functions["delete_ingestion"](delete_run("kept-check")))

    assert (answer.status_code, body_of(answer)["claim_checks_kept"]) == (200, 1)
    assert blobs_of(azurite.connection_string, "kept-check") == {"large-messages": ["kept-check/000000/000001.json"]}


def test_purging_a_run_that_is_still_ingesting_answers_409_and_keeps_it(on_loop, functions, probe, monkeypatch):
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "200"))
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "busy", "chunk_size": 100})))

    answer = on_loop(functions["delete_ingestion"](delete_run("busy")))

    assert (answer.status_code, answer.mimetype) == (409, PROBLEM_JSON)
    assert body_of(answer)["state"] == "ingesting" and "still ingesting" in body_of(answer)["detail"]
    assert len(probe.chunk_names("busy")) == 2


def test_the_cli_purges_a_finished_run_and_names_an_unknown_one(on_loop, functions, probe, app_env, azurite):
    finished_run_with_everything(on_loop, functions, probe, "cli-purged")
    env = {**app_env, "QUEUE_MESSAGE_TTL": "-1"}  # never expires: the claim check stays

    done = cli("purge", "cli-purged", "--json", env=env)
    unknown = cli("purge", "nobody", env=env)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["claim_checks_kept"] == 1
    assert set(blobs_of(azurite.connection_string, "cli-purged")) == {"large-messages"}
    assert (unknown.returncode, unknown.stderr.strip()) == (2, "error: no run 'nobody'")


def test_a_failed_run_with_a_chunk_still_sending_is_not_purged(on_loop, functions, probe):
    write_chunked_run(on_loop, probe, "failing", ["a", "b"])
    ctx = on_loop(app_context())
    record, etag = on_loop(ctx.runs.get_versioned("failing"))
    on_loop(ctx.runs.save(record.failed("the source went away", 1, 2), if_match=etag))
    on_loop(claim_chunk(ctx.runs, ChunkRef("failing", 0), "still-sending", lease_seconds=600))

    answer = on_loop(functions["delete_ingestion"](delete_run("failing")))

    assert answer.status_code == 409 and "chunk 0 is still being ingested" in body_of(answer)["detail"]
    assert probe.chunk_names("failing") == ["failing/000000.jsonl"]


def test_a_redrive_in_flight_for_a_purged_run_sends_nothing_and_leaves_nothing(
    on_loop, functions, probe, app_env, azurite
):
    write_chunked_run(on_loop, probe, "orphan", ["a", "b"])
    ctx = on_loop(app_context())
    record, etag = on_loop(ctx.runs.get_versioned("orphan"))
    on_loop(ctx.runs.save(record.failed("the source went away", 1, 2), if_match=etag))
    assert on_loop(functions["delete_ingestion"](delete_run("orphan"))).status_code == 200

    status = on_loop(redrive_chunk(ctx, ChunkRef("orphan", 0).redrive_message().encode()))  # queued before

    assert status is None and probe.queue_length() == 0
    assert blobs_of(azurite.connection_string, "orphan") == {}
    again = on_loop(functions["delete_ingestion"](delete_run("orphan")))
    assert (again.status_code, again.mimetype) == (404, PROBLEM_JSON)


def test_purging_again_finishes_what_a_racing_invocation_left_after_the_record_went(on_loop, functions, probe, azurite):
    write_chunked_run(on_loop, probe, "leftover", ["a", "b"])
    ctx = on_loop(app_context())
    record, etag = on_loop(ctx.runs.get_versioned("leftover"))
    on_loop(ctx.runs.save(record.failed("the source went away", 1, 2), if_match=etag))
    assert on_loop(functions["delete_ingestion"](delete_run("leftover"))).status_code == 200
    claim = on_loop(claim_chunk(ctx.runs, ChunkRef("leftover", 0), "past-its-record-check", lease_seconds=600))
    on_loop(claim.release())  # it claimed after the purge had listed the statuses, then stopped
    assert set(blobs_of(azurite.connection_string, "leftover")) == {"ingestion-runs"}

    answer = on_loop(functions["delete_ingestion"](delete_run("leftover")))

    assert (answer.status_code, body_of(answer)["run_blobs"]) == (200, 1)
    assert blobs_of(azurite.connection_string, "leftover") == {}
    assert on_loop(functions["delete_ingestion"](delete_run("leftover"))).status_code == 404


def test_a_settled_run_whose_event_was_never_sent_gets_it_before_it_is_purged(on_loop, functions, probe, azurite):
    name = write_chunked_run(on_loop, probe, "unsent", ["one", "two"])
    on_loop(functions["ingest_chunk"](delivered(probe, name)))
    assert [event["run_id"] for event in events_of(probe, os.environ)] == ["unsent"]
    runs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("ingestion-runs")
    runs.delete_blob(run_event_mark_blob("unsent"))  # as if every finisher died before settling the run

    answer = on_loop(functions["delete_ingestion"](delete_run("unsent")))

    assert answer.status_code == 200, answer.get_body()
    assert [(event["run_id"], event["state"]) for event in events_of(probe, os.environ)] == [("unsent", "completed")]
    assert blobs_of(azurite.connection_string, "unsent") == {}


def test_a_new_run_under_a_purged_runs_id_starts_from_nothing_whatever_the_purge_raced(
    on_loop, functions, probe, monkeypatch
):
    """A cancel and a finisher racing a purge write after its listing: a stop and a completion mark marked
    sent are left under the run id. A new run under that id neither starts cancelled nor loses its event."""
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "200"))
    ctx = on_loop(app_context())
    on_loop(ctx.runs.stop("reused-id", "cancelled"))
    etag = on_loop(ctx.runs.mark_event("reused-id", b'{"run_id": "reused-id", "finished_at": "2026-01-01T00:00:00Z"}'))
    assert etag is not None and on_loop(ctx.runs.mark_sent("reused-id", etag))

    answer = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "reused-id", "chunk_size": 5000})))
    ingest_every_chunk(on_loop, functions, probe, "reused-id")
    status = status_of(on_loop, functions, "reused-id")

    assert answer.status_code == 202 and status["state"] == "completed" and status["cancelled_at"] is None
    assert status["finished_at"] != "2026-01-01T00:00:00Z"
    assert [event["run_id"] for event in events_of(probe, os.environ)] == ["reused-id"]


def test_a_purge_of_a_failed_run_with_chunks_left_sends_its_event_as_it_ends(on_loop, functions, probe):
    write_chunked_run(on_loop, probe, "failed-early", ["a", "b"])  # chunk 0 waits for its trigger
    ctx = on_loop(app_context())
    record, etag = on_loop(ctx.runs.get_versioned("failed-early"))
    on_loop(ctx.runs.save(record.failed("the source went away", 1, 2), if_match=etag))  # then the source failed

    answer = on_loop(functions["delete_ingestion"](delete_request("failed-early")))

    assert answer.status_code == 200, body_of(answer)
    events = events_of(probe, os.environ)
    assert [(event["run_id"], event["state"]) for event in events] == [("failed-early", "failed")]
    assert events[0]["error"] == "the source went away"


# Where a new run's start may land during a purge of a run under the same id: before each of the purge's three
# deletion sweeps (claim checks, chunks, run blobs), before it frees the id, and after it has ended.
PURGE_POINTS = ("claim checks", "chunks", "run blobs", "freeing the id", "after")


@pytest.mark.parametrize("point", range(len(PURGE_POINTS)), ids=PURGE_POINTS)
def test_a_run_started_under_the_id_at_any_point_of_its_purge_is_never_touched_by_it(
    on_loop, functions, probe, monkeypatch, point
):
    """Invariant: the purge deletes only the run it purges. A start while the purge runs answers 409 naming the
    purge, and once it has ended a start under the id delivers every ID of the new run."""
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "200"))
    run_id = f"raced-{point}"
    write_chunked_run(on_loop, probe, run_id, ["a", "b"])
    ctx = on_loop(app_context())
    record, etag = on_loop(ctx.runs.get_versioned(run_id))
    on_loop(ctx.runs.save(record.failed("the source went away", 1, 2), if_match=etag))
    starts: list[func.HttpResponse] = []
    steps = [0]

    async def start() -> None:
        starts.append(await functions["start_ingestion"](post_ingestion({"run_id": run_id, "chunk_size": 64})))

    async def at_step() -> None:
        if steps[0] == point:
            await start()
        steps[0] += 1

    delete_all, drop_purged = purge._delete_all, RunStore.drop_purged

    async def deleting(container, names, hold):
        await at_step()
        return await delete_all(container, names, hold)

    async def dropping(store, run_id, etag):
        await at_step()
        return await drop_purged(store, run_id, etag)

    monkeypatch.setattr(purge, "_delete_all", deleting)
    monkeypatch.setattr(RunStore, "drop_purged", dropping)
    assert on_loop(functions["delete_ingestion"](delete_run(run_id))).status_code == 200
    if not starts:
        on_loop(start())
    (answer,) = starts
    if point < PURGE_POINTS.index("after"):
        assert answer.status_code == 409 and "being purged" in body_of(answer)["detail"], body_of(answer)
        on_loop(start())
    assert starts[-1].status_code == 202, body_of(starts[-1])
    ingest_every_chunk(on_loop, functions, probe, run_id)
    status = status_of(on_loop, functions, run_id)
    assert (status["state"], status["messages"]["enqueued"]) == ("completed", 200), status
    delivered_ids = probe.consume()
    assert len(delivered_ids) == len(set(delivered_ids)) == 200


RACING = ("cancel", "redrive", "purge", "sweep")


@pytest.mark.parametrize("action", RACING)
@pytest.mark.parametrize("point", range(len(PURGE_POINTS) + 1), ids=("judged", *PURGE_POINTS))
def test_any_operator_action_at_any_point_of_a_purge_leaves_the_id_whole_and_the_next_run_clean(
    on_loop, functions, probe, monkeypatch, action, point
):
    """Invariant, whatever an operator or the sweeper does at whichever step of a purge (once the purge has judged
    the run, before each deletion sweep, before it frees the id, after): the id ends either free, nothing of the
    purged run left to touch a run started under it next (which delivers every ID, uncancelled), or held by the
    purged run whole (its record and its chunk readable, for a redrive or another purge)."""
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "200"))
    run_id = f"acted-{action}-{point}"
    write_chunked_run(on_loop, probe, run_id, ["a", "b"])
    ctx = on_loop(app_context())
    record, etag = on_loop(ctx.runs.get_versioned(run_id))
    on_loop(ctx.runs.save(record.failed("the source went away", 1, 2), if_match=etag))
    requests = {"cancel": ("cancel_ingestion", post_cancel), "redrive": ("redrive_ingestion", post_redrive),
                "purge": ("delete_ingestion", delete_run)}  # fmt: skip
    steps = [0]

    async def at_step() -> None:
        steps[0] += 1  # first: a racing purge passes the same steps
        if steps[0] - 1 == point:
            if action == "sweep":
                await sweep(await app_context())
            else:
                function, request = requests[action]
                answer = await functions[function](request(run_id))
                assert answer.status_code < 500, answer.get_body()

    unsent, delete_all, drop_purged = purge.send_unsent_event, purge._delete_all, RunStore.drop_purged

    async def judged(ctx_, run_id_):
        sent = await unsent(ctx_, run_id_)
        await at_step()
        return sent

    async def deleting(container, names, hold):
        await at_step()
        return await delete_all(container, names, hold)

    async def dropping(store, run_id_, etag_):
        await at_step()
        return await drop_purged(store, run_id_, etag_)

    with monkeypatch.context() as patched:
        patched.setattr(purge, "send_unsent_event", judged)
        patched.setattr(purge, "_delete_all", deleting)
        patched.setattr(RunStore, "drop_purged", dropping)
        answer = on_loop(functions["delete_ingestion"](delete_run(run_id)))
        if steps[0] <= point:  # "after": the purge has ended
            on_loop(at_step())
    assert answer.status_code in (200, 409), body_of(answer)

    if on_loop(functions["get_ingestion_status"](get_status(run_id))).status_code == 200:
        assert probe.chunk_names(run_id) and on_loop(ctx.runs.get(run_id)) is not None  # held, whole
        return
    started = on_loop(functions["start_ingestion"](post_ingestion({"run_id": run_id, "chunk_size": 64})))
    assert started.status_code == 202, body_of(started)
    ingest_every_chunk(on_loop, functions, probe, run_id)
    status = status_of(on_loop, functions, run_id)
    assert (status["state"], status["messages"]["enqueued"], status["cancelled_at"]) == ("completed", 200, None)
    delivered_ids = probe.consume()
    assert len(delivered_ids) == len(set(delivered_ids)) == 200 and not {"a", "b"} & set(delivered_ids)


def test_a_purge_cut_short_holds_the_id_until_purged_again(on_loop, functions, probe, monkeypatch):
    write_chunked_run(on_loop, probe, "cut-short", ["a", "b"])
    ctx = on_loop(app_context())
    record, etag = on_loop(ctx.runs.get_versioned("cut-short"))
    on_loop(ctx.runs.save(record.failed("the source went away", 1, 2), if_match=etag))

    async def dies(container, names, hold):
        raise ConnectionError("the purging instance died")

    with monkeypatch.context() as patched:
        patched.setattr(purge, "_delete_all", dies)
        with pytest.raises(ConnectionError):
            on_loop(purge.purge_run(ctx, "cut-short"))

    assert on_loop(functions["get_ingestion_status"](get_status("cut-short"))).status_code == 404
    refused = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "cut-short"})))
    assert refused.status_code == 409 and "purge it again" in body_of(refused)["detail"]
    at_once = on_loop(functions["delete_ingestion"](delete_run("cut-short")))  # it might be a live purge's mark
    assert at_once.status_code == 409 and "purge it again after" in body_of(at_once)["detail"]
    monkeypatch.setattr(purge, "PURGE_MARK_STALE", 0.0)  # as once its mark has gone unrenewed that long
    assert on_loop(functions["delete_ingestion"](delete_run("cut-short"))).status_code == 200
    assert blobs_of(probe.connection_string, "cut-short") == {}
    assert on_loop(functions["delete_ingestion"](delete_run("cut-short"))).status_code == 404


def test_a_run_written_as_its_purge_begins_is_kept_and_the_purge_answers_409(on_loop, functions, probe, monkeypatch):
    write_chunked_run(on_loop, probe, "moving", ["a", "b"])
    ctx = on_loop(app_context())
    record, etag = on_loop(ctx.runs.get_versioned("moving"))
    on_loop(ctx.runs.save(record.failed("the source went away", 1, 2), if_match=etag))
    get_versioned = RunStore.get_versioned

    async def written_meanwhile(store, run_id):
        versioned = await get_versioned(store, run_id)
        if versioned is not None:  # a redrive reopens it right after the purge read it
            await store.save(versioned[0].reopened(), if_match=versioned[1])
        return versioned

    with monkeypatch.context() as patched:
        patched.setattr(RunStore, "get_versioned", written_meanwhile)
        answer = on_loop(functions["delete_ingestion"](delete_run("moving")))

    assert answer.status_code == 409, body_of(answer)  # judged as it is now: chunking again
    assert on_loop(ctx.runs.get("moving")) is not None and probe.chunk_names("moving")
