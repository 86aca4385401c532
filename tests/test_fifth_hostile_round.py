"""A fifth hostile round (a review of the purge's own mark and of failing a chunk on a refused send): a finisher
racing a purge, a redrive or a cancel that a purge and a new run under the id overtake, a 429 from a gateway.
Each failed before its fix."""

from __future__ import annotations

import asyncio
import os

import azure.functions as func
from azure.storage.blob import BlobServiceClient

from core.context import app_context
from core.contract import ChunkRef, run_event_mark_blob
from core.errors import QueueSendError
from core.run_events import settle_run
from core.run_store import ChunkStatus, RunStore, run_prefix, utc_now
from runs import cancel
from testkit.chunked_runs import delivered, write_chunked_run
from testkit.http_requests import BASE, body_of, post_cancel, post_ingestion, post_redrive, status_of
from testkit.run_events import events_of
from tests.test_storage_answers import Gateway, send


def delete_run(run_id: str) -> func.HttpRequest:
    return func.HttpRequest("DELETE", f"{BASE}/ingestions/{run_id}", route_params={"run_id": run_id}, body=b"")


def test_a_finisher_racing_a_purge_never_leaves_the_run_without_its_completion_event(
    on_loop, functions, probe, azurite, monkeypatch
):
    """A settled run whose finisher marks its event as the purge looks gets its completion event all the same:
    the purge leaves it to the finisher ("another invocation sent it"), so the finisher must not take it back."""
    name = write_chunked_run(on_loop, probe, "raced-finisher", ["one", "two"])
    on_loop(functions["ingest_chunk"](delivered(probe, name)))
    assert [event["run_id"] for event in events_of(probe, os.environ)] == ["raced-finisher"]
    runs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("ingestion-runs")
    runs.delete_blob(run_event_mark_blob("raced-finisher"))  # the last chunk is done; its finisher is settling
    ctx = on_loop(app_context())

    mark_event, mark_purging = RunStore.mark_event, RunStore.mark_purging
    finisher_marked, purge_marked = asyncio.Event(), asyncio.Event()
    calls: list[str] = []
    tasks: list[asyncio.Task] = []

    async def interleaved_mark_event(store, run_id, event):
        if not calls:  # the purge's settle: the finisher marks first
            calls.append("purge")
            tasks.append(asyncio.ensure_future(settle_run(ctx, run_id)))
            await finisher_marked.wait()
            return await mark_event(store, run_id, event)
        calls.append("finisher")
        etag = await mark_event(store, run_id, event)
        finisher_marked.set()
        await purge_marked.wait()  # the finisher reads the record only once the purge has marked it
        return etag

    async def marked(store, run_id, etag):
        result = await mark_purging(store, run_id, etag)
        purge_marked.set()
        return result

    async def both():
        answer = await functions["delete_ingestion"](delete_run("raced-finisher"))
        await tasks[0]
        return answer

    with monkeypatch.context() as patched:
        patched.setattr(RunStore, "mark_event", interleaved_mark_event)
        patched.setattr(RunStore, "mark_purging", marked)
        answer = on_loop(both())

    assert answer.status_code == 200, body_of(answer)
    assert calls == ["purge", "finisher"]
    events = events_of(probe, os.environ)
    assert [(event["run_id"], event["state"]) for event in events] == [("raced-finisher", "completed")], events


def failed_chunk_run(on_loop, probe, run_id: str) -> None:
    """A run whose chunking ended and whose one chunk failed: a redrive reopens only the chunk."""
    write_chunked_run(on_loop, probe, run_id, ["a", "b"])
    ctx = on_loop(app_context())
    failed = ChunkStatus(0, "failed", 0, 2, utc_now(), error="the queue refused it")
    on_loop(ctx.runs.put_chunk_status(ChunkRef(run_id, 0), failed, expected=None))


def test_a_redrive_whose_record_write_a_purge_followed_leaves_a_new_run_under_the_id_alone(
    on_loop, functions, probe, monkeypatch
):
    """A redrive that wrote the run's record just before a purge judged it (so the purge went ahead) never lifts
    the cancel of a new run started under the freed id: the new run stays cancelled."""
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "200"))
    run_id = "redrive-then-purge"
    failed_chunk_run(on_loop, probe, run_id)
    put_chunk_status = RunStore.put_chunk_status
    meanwhile: list[func.HttpResponse] = []

    async def purge_start_and_cancel_meanwhile(store, ref, status, *, expected):
        if not meanwhile and status.state == "stopped":  # the redrive has written the record, not yet the chunk
            meanwhile.append(await functions["delete_ingestion"](delete_run(run_id)))
            meanwhile.append(await functions["start_ingestion"](post_ingestion({"run_id": run_id, "chunk_size": 64})))
            meanwhile.append(await functions["cancel_ingestion"](post_cancel(run_id)))
        return await put_chunk_status(store, ref, status, expected=expected)

    with monkeypatch.context() as patched:
        patched.setattr(RunStore, "put_chunk_status", purge_start_and_cancel_meanwhile)
        redrive = on_loop(functions["redrive_ingestion"](post_redrive(run_id)))

    assert [answer.status_code for answer in meanwhile] == [200, 202, 202], [body_of(a) for a in meanwhile]
    status = status_of(on_loop, functions, run_id)
    assert status["state"] == "cancelled" and status["cancelled_at"] is not None, (redrive.status_code, status)


def test_a_429_too_many_requests_from_a_gateway_is_retried_not_a_chunk_failed_at_once():
    """A 429 (Too Many Requests: a gateway or proxy rate-limiting, transient by definition) is retried until the
    message is stored, as 503 is; it is not one of the answers "no retry changes" that fail the chunk at once."""
    gateway = Gateway([429])
    try:
        send(gateway, ["id-1"])
    except QueueSendError as exc:
        raise AssertionError(f"a 429 failed the send (refused={exc.refused}): {exc}") from None
    finally:
        gateway.stop()
    assert len(gateway.requests) == 2


def test_a_cancel_racing_a_purge_never_cancels_a_new_run_started_under_the_freed_id(
    on_loop, functions, probe, monkeypatch
):
    """A cancel of a cancelled run (a client's retried POST) that read it just before a purge freed its id does not
    stop a new run started under the id before the cancel wrote its stop: the new run goes on and completes."""
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "200"))
    run_id = "cancel-raced"
    write_chunked_run(on_loop, probe, run_id, ["a", "b"])
    assert on_loop(functions["cancel_ingestion"](post_cancel(run_id))).status_code == 202
    stop = RunStore.stop
    meanwhile: list[func.HttpResponse] = []

    async def purge_and_start_meanwhile(store, run_id_, reason):
        if not meanwhile:  # the retried cancel read the run as cancelled; the purge and a start go by
            meanwhile.append(await functions["delete_ingestion"](delete_run(run_id)))
            meanwhile.append(await functions["start_ingestion"](post_ingestion({"run_id": run_id, "chunk_size": 64})))
        return await stop(store, run_id_, reason)

    with monkeypatch.context() as patched:
        patched.setattr(RunStore, "stop", purge_and_start_meanwhile)
        retried = on_loop(functions["cancel_ingestion"](post_cancel(run_id)))

    assert [answer.status_code for answer in meanwhile] == [200, 202], [body_of(a) for a in meanwhile]
    status = status_of(on_loop, functions, run_id)
    assert status["cancelled_at"] is None and status["state"] == "ingesting", (retried.status_code, status)


def test_a_stale_cancel_of_a_purged_run_does_not_lift_the_new_runs_own_cancel(on_loop, functions, probe, monkeypatch):
    """Cancel of run A reads A's status; meanwhile A is purged, a new run B starts under the id and B's operator
    cancels it. A's cancel then meets B's stop in `stop()` (which returns the stop in force, not only one it
    wrote), sees the record is a new run's and calls lift_stop_written with B's stop: equal by value, so B's
    cancel is deleted. B goes on sending though its own cancel was answered 202."""
    run_id = "stale-cancel"
    write_chunked_run(on_loop, probe, run_id, ["a", "b"])
    ctx = on_loop(app_context())
    real_status = cancel.run_status
    loop: asyncio.AbstractEventLoop | None = None

    async def status_then_purge_then_new_cancelled_run(runs, rid, **kw):
        status = await real_status(runs, rid, **kw)  # A, as A's cancel judged it
        runs_container = ctx.clients.blobs.get_container_client(ctx.settings.runs_container)
        for container in (runs_container, ctx.chunk_container):  # A purged (everything under its prefix gone)
            async for blob in container.list_blobs(name_starts_with=run_prefix(rid)):
                await container.delete_blob(blob.name)
        await asyncio.sleep(0.01)  # B's created_at differs from A's
        await asyncio.to_thread(
            write_chunked_run, lambda c: asyncio.run_coroutine_threadsafe(c, loop).result(), probe, rid, ["c", "d"]
        )  # B starts under the id
        assert (await runs.stop(rid, "cancelled"))[0].reason == "cancelled"  # B's operator cancels B
        return status

    async def go():
        nonlocal loop
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(cancel, "run_status", status_then_purge_then_new_cancelled_run)
        return await functions["cancel_ingestion"](post_cancel(run_id))

    answer = on_loop(go())
    assert answer.status_code == 404  # A is gone: its cancel is refused
    assert on_loop(ctx.runs.get(run_id)) is not None  # B holds the id
    assert on_loop(ctx.runs.stop_of(run_id)) is not None, "B's own cancel was lifted by A's stale cancel"
