"""The third hostile round's findings (a review of the second round's fixes, and a soak), each reproduced as
reported. Their classes are checked by generated inputs too: tests/test_invariants.py (a next position to
refuse, doubled deliveries, deleted chunks) and tests/unit/test_chunk_contract.py (every chunk index and
generation through every name and message)."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import time
from collections import Counter

import azure.functions as func
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from core.context import app_context
from core.contract import ChunkRef
from core.run_store import RunStore
from fanout.demo_api import DemoApi, demo_ids
from runs.sweep import sweep
from testkit.hostile_source import SETTINGS, Fault, HostileSource, SourceSpec
from testkit.http_requests import (
    body_of,
    chunk_blob,
    delete_request,
    get_status,
    post_cancel,
    post_ingestion,
    post_redrive,
)  # fmt: skip
from testkit.loopback_api import LoopbackApi
from testkit.run_world import NOTHING_GOES_WRONG, Schedule, World, environment, hostile_world, world_env
from testkit.storage_probe import StorageProbe

IDS = [json.dumps(f"id-{index:04d}") for index in range(100)]
HOUR = 3600.0


def texts_of(ids: list[str]) -> list[str]:
    return [json.loads(text) for text in ids]


async def deliver_redrives(functions, env: dict[str, str]) -> int:
    """Every message on the redrive queue to `redrive_chunk`, as the host would: how many."""
    queue = QueueClient.from_connection_string(env["AzureWebJobsStorage"], env["REDRIVE_QUEUE"],
                                               message_decode_policy=TextBase64DecodePolicy())  # fmt: skip
    delivered = 0
    while batch := list(queue.receive_messages(max_messages=32)):
        for message in batch:
            await functions["redrive_chunk"](func.QueueMessage(body=message.content.encode()))
            queue.delete_message(message)
            delivered += 1
    return delivered


async def trigger(functions, env: dict[str, str], name: str) -> None:
    """The blob trigger for a chunk as it is stored now."""
    ctx = await app_context()
    download = await ctx.chunk_container.download_blob(name)
    data = await download.readall()
    await functions["ingest_chunk"](chunk_blob(env["CHUNK_CONTAINER"], name, data, download.properties.metadata))


# --- a chunk that failed stays failed ---------------------------------------------------------------------


def test_a_doubled_redrive_of_a_chunk_whose_blob_is_gone_leaves_it_failed_and_the_run_ends(functions, azurite):
    """Found by the soak: the sweeper's redrive of a chunk whose blob was deleted marks it failed and fails the
    run; the host delivered that redrive twice, and the second delivery wrote `stopped` over `failed`. The
    run's stop was then lifted as stale and nothing moved the chunk: the run stayed `ingesting` for ever."""
    spec = SourceSpec("none", tuple(IDS[:1]))
    schedule = Schedule(actions=((0, "delete-chunk"),), doubled=frozenset({0, 1}))

    seen, _, _ = hostile_world(functions, azurite.connection_string, spec, 24, schedule, heals=False)

    assert seen.status["state"] == "failed", seen.status
    (chunk,) = seen.status["failed_chunks"]
    assert "is gone" in chunk["error"]


def test_a_redrive_between_a_chunks_settle_reading_and_its_stop_write_is_not_undone(
    functions, azurite, on_loop, monkeypatch
):
    """A chunk's settle reads the run failed past its tolerance, then writes the run's stop; a redrive lands
    in between (the failed chunk reopened, the stop lifted). The stop written after it is stale: the
    sweeper lifts it and moves the stopped chunks on, and every ID lands."""
    api = DemoApi(count=20).start()
    try:
        env = world_env(azurite.connection_string, api.url, {"SOURCE_PAGINATION": "none"},
                        INGEST_CHECKPOINT_EVERY="1000")  # fmt: skip
        in_chunk_0 = contextvars.ContextVar("in_chunk_0", default=False)
        at_stop, go_on = asyncio.Event(), asyncio.Event()
        stop = RunStore.stop

        async def held_stop(self: RunStore, run_id: str, reason: str) -> None:
            if in_chunk_0.get():  # chunk 0's settle, between reading the run's status and writing its stop
                at_stop.set()
                await go_on.wait()
            return await stop(self, run_id, reason)

        monkeypatch.setattr(RunStore, "stop", held_stop)

        async def scenario() -> dict:
            await functions["start_ingestion"](post_ingestion({"chunk_size": 10, "run_id": "held"}))
            ctx = await app_context()
            good = await (await ctx.chunk_container.download_blob("held/000001.jsonl")).readall()
            await ctx.chunk_container.upload_blob("held/000001.jsonl", b"not json\n" * 10, overwrite=True,
                                                  metadata={"message_count": "10"})  # fmt: skip
            await trigger(functions, env, "held/000001.jsonl")  # fails: the run fails (it tolerates none)
            in_chunk_0.set(True)
            first = asyncio.create_task(trigger(functions, env, "held/000000.jsonl"))
            in_chunk_0.set(False)
            await at_stop.wait()
            await ctx.chunk_container.upload_blob("held/000001.jsonl", good, overwrite=True,
                                                  metadata={"message_count": "10"})  # fmt: skip
            redriven = await functions["redrive_ingestion"](post_redrive("held"))
            assert redriven.status_code == 202, redriven.get_body()
            go_on.set()
            await first
            await deliver_redrives(functions, env)
            for hours in range(1, 4):
                await sweep(ctx, now=time.time() + hours * HOUR)
                await deliver_redrives(functions, env)
            return body_of(await functions["get_ingestion_status"](get_status("held")))

        with environment(env):
            status = on_loop(scenario())
    finally:
        api.stop()
    assert status["state"] == "completed", status
    assert set(StorageProbe(azurite.connection_string, env["QUEUE_NAME"]).drain()) == set(demo_ids(20))


# --- where chunking resumes -------------------------------------------------------------------------------


def test_a_next_link_to_another_host_fails_the_run_on_the_page_that_gave_it_and_a_redrive_delivers_all_once(
    functions, azurite
):
    """The run failed on the refused link itself, so a redrive asked for it again and failed for ever (or,
    before that, re-read from the invocation's start and sent its items twice)."""
    spec = SourceSpec("next-link", tuple(IDS[:30]), pages=(10, 10, 10), faults=(Fault(1, "bad-next"),))

    seen, _, _ = hostile_world(functions, azurite.connection_string, spec, 5)

    assert seen.healed and seen.status["state"] == "completed", seen.status
    assert Counter(seen.messages) == Counter(texts_of(IDS[:30]))


def test_a_run_past_source_max_pages_then_redriven_with_it_raised_sends_each_item_once(functions, azurite):
    spec = SourceSpec("cursor", tuple(IDS[:50]), pages=(10,) * 5)

    def raise_it() -> None:  # what the run's reason tells the operator to do, before the redrive
        os.environ["SOURCE_MAX_PAGES"] = "100"

    source = HostileSource(spec)
    try:
        env = world_env(azurite.connection_string, source.url, SETTINGS["cursor"], SOURCE_MAX_PAGES="3")
        seen = World(functions, env, f"mp-{os.urandom(3).hex()}", NOTHING_GOES_WRONG, raise_it).run(10, 0)
    finally:
        source.stop()

    assert seen.healed and seen.status["state"] == "completed", seen.status
    assert Counter(seen.messages) == Counter(texts_of(IDS[:50]))


def test_source_page_size_changed_mid_run_does_not_move_where_a_page_mode_run_resumes(functions, azurite, on_loop):
    api = DemoApi(count=60, pagination="page", page_size=10).start()
    try:
        pages = {"SOURCE_PAGINATION": "page", "SOURCE_ITEMS_PATH": "data", "SOURCE_PAGE_SIZE": "10"}
        env = world_env(azurite.connection_string, api.url, pages, CHUNKING_TIME_BUDGET="0")
        with environment(env):
            on_loop(functions["start_ingestion"](post_ingestion({"run_id": "paged", "chunk_size": 10})))
        env["SOURCE_PAGE_SIZE"] = "20"  # the operator raises it while the run goes on
        seen = World(functions, env, "paged", NOTHING_GOES_WRONG, heal=None).run(10, 0)
    finally:
        api.stop()
    assert seen.status["state"] == "completed", seen.status
    assert Counter(seen.messages) == Counter(demo_ids(60))


# --- a run_id used again after a purge --------------------------------------------------------------------


def _reused_run_world(azurite, items: dict[str, list[str]], **settings: str):
    api = LoopbackApi(respond=lambda handler: _serve(handler, items["now"]))
    env = world_env(azurite.connection_string, api.url, {"SOURCE_PAGINATION": "none"}, **settings)
    return api, env


def _serve(handler, items: list[str]) -> None:
    data = json.dumps(items).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def test_what_a_purged_run_left_in_flight_is_not_taken_for_the_run_that_reuses_its_id(functions, azurite, on_loop):
    """A blob-trigger delivery and a redrive message of the first run arrive after its purge, once a second
    run has the same run_id: neither sends the first run's items as the second's, nor marks the second
    run's chunk (not yet written) as gone."""
    items = {"now": [f"old-{index}" for index in range(15)]}
    api, env = _reused_run_world(azurite, items)

    async def scenario() -> dict:
        await functions["start_ingestion"](post_ingestion({"run_id": "nightly", "chunk_size": 10}))
        ctx = await app_context()
        old = await ctx.chunk_container.download_blob("nightly/000000.jsonl")
        stale_delivery = chunk_blob(env["CHUNK_CONTAINER"], "nightly/000000.jsonl", await old.readall(),
                                    old.properties.metadata)  # fmt: skip
        stale_redrive = (await ctx.runs.get("nightly")).generation
        await functions["cancel_ingestion"](post_cancel("nightly"))
        assert (await functions["delete_ingestion"](delete_request("nightly"))).status_code == 200
        items["now"] = [f"new-{index}" for index in range(15)]
        os.environ["CHUNKING_TIME_BUDGET"] = "0"  # the second run writes its chunk 0, and hands chunk 1 on
        await functions["start_ingestion"](post_ingestion({"run_id": "nightly", "chunk_size": 10}))
        await functions["ingest_chunk"](stale_delivery)
        message = ChunkRef("nightly", 1, stale_redrive).redrive_message()
        await functions["redrive_chunk"](func.QueueMessage(body=message.encode()))
        return body_of(await functions["get_ingestion_status"](get_status("nightly")))

    try:
        with environment(env):
            status = on_loop(scenario())
            assert status["chunks"]["ingested"] == 0 and status["chunks"]["failed"] == 0, status
            seen = World(functions, env, "nightly", NOTHING_GOES_WRONG, heal=None).run(10, 0)
    finally:
        api.stop()
    assert seen.status["state"] == "completed", seen.status
    assert sorted(seen.messages) == sorted(items["now"])


def test_a_claim_check_of_a_purged_run_is_not_overwritten_by_the_run_that_reuses_its_id(functions, azurite, on_loop):
    items = {"now": ["id-0", "A" * 70_000]}
    api, env = _reused_run_world(azurite, items, LARGE_MESSAGE_MODE="claim-check")
    checks = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("large-messages")

    def run_once() -> list[str]:
        return World(functions, env, "daily", NOTHING_GOES_WRONG, heal=None).run(10, 0).messages

    try:
        with environment(env):
            messages = run_once()
            purged = on_loop(functions["delete_ingestion"](delete_request("daily")))
            assert purged.status_code == 200 and body_of(purged)["claim_checks_kept"] == 1
        items["now"] = ["id-9", "Z" * 70_000]
        with environment(env):
            messages += run_once()
    finally:
        api.stop()
    payloads = []
    for message in messages:
        if message.startswith('{"claim_check"'):
            payloads.append(checks.download_blob(json.loads(message)["claim_check"]["blob"]).readall()[:1])
    assert sorted(payloads) == [b"A", b"Z"]  # each message still finds its own payload


# --- a claim-check blob lives as long as its message ------------------------------------------------------


def test_a_purge_keeps_a_claim_check_blob_a_redrive_wrote_again_and_one_sent_to_live_longer(
    functions, azurite, on_loop
):
    """A purge judged claim-check blobs by when they were first written and by the TTL set at purge time:
    a blob written again by a redrive (its message sent then), or one whose message was sent never to expire
    before the setting changed, lost its payload while the message lived on."""
    items = {"now": ["id-0", "B" * 70_000]}
    api, env = _reused_run_world(azurite, items, LARGE_MESSAGE_MODE="claim-check", QUEUE_MESSAGE_TTL="-1")
    checks = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("large-messages")
    try:
        with environment(env):
            messages = World(functions, env, "ttl", NOTHING_GOES_WRONG, heal=None).run(10, 0).messages
        env["QUEUE_MESSAGE_TTL"] = "1"  # the operator shortens it afterwards
        time.sleep(2)
        with environment(env):
            purged = body_of(on_loop(functions["delete_ingestion"](delete_request("ttl"))))
    finally:
        api.stop()
    assert purged["claim_checks_kept"] == 1 and purged["claim_checks_deleted"] == 0, purged
    (message,) = [message for message in messages if message.startswith('{"claim_check"')]
    assert checks.download_blob(json.loads(message)["claim_check"]["blob"]).readall()[:1] == b"B"
