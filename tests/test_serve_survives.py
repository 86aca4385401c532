"""`fanout serve` survives storage failures as the Functions host does: storage down (Azurite stopped, then
started again on its folder) ends no trigger and not the HTTP side, and a run started after it completes;
a message whose delete fails (its pop receipt no longer valid) is logged and stops no other message."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import azure.functions as func
import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from core.context import app_context
from fanout import serve as serve_module
from fanout.azurite import PROJECT_ROOT, Azurite, free_port, start_azurite
from fanout.client import FanoutClient
from fanout.demo_api import DemoApi, demo_ids
from fanout.serve import BlobTrigger, QueueTrigger
from testkit.storage_probe import StorageProbe, delete_queues

KEY = f"key-{secrets.token_hex(8)}"
IDS = 20
OUTAGE_SECONDS = 2.0  # Azurite stopped; its restart adds as much again


@pytest.fixture
def stoppable_azurite(tmp_path) -> Iterator[Azurite]:
    """An Azurite of its own that keeps its state on disk, so that it can be stopped and started again."""
    instance = start_azurite(in_memory=False, location=tmp_path / "azurite")
    yield instance
    instance.close()


def test_storage_down_ends_no_trigger_and_a_run_started_after_it_completes(stoppable_azurite, tmp_path):
    source = DemoApi(count=IDS, pagination="page", page_size=10).start()
    suffix = secrets.token_hex(4)
    env = {
        **os.environ, "AzureWebJobsStorage": stoppable_azurite.connection_string, "FANOUT_FUNCTION_KEY": KEY,
        "SOURCE_URL": source.url, "SOURCE_PAGINATION": "page", "SOURCE_PAGE_SIZE": "10", "SOURCE_ITEMS_PATH": "data",
        "CHUNKING_TIME_BUDGET": "0",  # each page after the first is chunked by `continue_chunking`: a queue trigger
        "HTTP_RETRY_AFTER": "1", "STORAGE_MAX_RETRIES": "1", "STORAGE_RETRY_BACKOFF": "0.1", "STORAGE_TIMEOUT": "3",
        "QUEUE_NAME": f"survives-{suffix}", "CONTROL_QUEUE": f"survives-control-{suffix}",
        "REDRIVE_QUEUE": f"survives-redrives-{suffix}", "RUN_EVENTS_QUEUE": f"survives-events-{suffix}",
        "CHUNK_CONTAINER": f"survives-{suffix}", "RUNS_CONTAINER": f"survives-runs-{suffix}",
    }  # fmt: skip
    port = free_port()
    logs = tmp_path / "serve.log"
    with logs.open("w") as stderr:
        server = subprocess.Popen([sys.executable, "-m", "fanout", "serve", "--port", str(port)], cwd=PROJECT_ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)  # fmt: skip
    try:
        assert server.stdout is not None and "serving the app" in server.stdout.readline()
        stoppable_azurite.stop()
        time.sleep(OUTAGE_SECONDS)
        assert httpx.get(f"http://127.0.0.1:{port}/api/openapi.json", timeout=10).status_code == 200
        stoppable_azurite.start(in_memory=False)
        assert server.poll() is None, logs.read_text()[-3000:]  # no trigger's failure ended it
        with FanoutClient(f"http://127.0.0.1:{port}", key=KEY) as client:
            client.start(chunk_size=10, run_id="after-the-outage")
            final = client.wait("after-the-outage", interval=0.2, timeout=15)
    finally:
        server.terminate()
        server.wait(timeout=20)
        source.stop()
    log = logs.read_text()

    assert final["state"] == "completed" and final["messages"]["enqueued"] == IDS, final
    delivered = StorageProbe(stoppable_azurite.connection_string, env["QUEUE_NAME"]).drain()
    assert sorted(delivered) == sorted(demo_ids(IDS))
    assert f"blob trigger on {env['CHUNK_CONTAINER']} failed; polled again in" in log
    assert f"queue trigger on {env['CONTROL_QUEUE']} failed; polled again in" in log


def test_a_message_whose_delete_fails_stops_no_other_message(on_loop, azurite, app_env, caplog):
    queue = f"settle-{secrets.token_hex(5)}"
    probe = StorageProbe(azurite.connection_string, queue)
    sender = QueueClient.from_connection_string(azurite.connection_string, queue,
                                                message_encode_policy=TextBase64EncodePolicy())  # fmt: skip
    handled: list[str] = []

    async def handle(message: func.QueueMessage) -> None:
        """The first delivery of "taken" is taken by another reader meanwhile: its pop receipt changes."""
        body = message.get_body().decode()
        if body == "taken" and body not in handled:
            probe.queue.update_message(message.id, message.pop_receipt, visibility_timeout=0)
        handled.append(body)

    async def until(done: Callable[[], bool], trigger: asyncio.Task[None], seconds: float = 8.0) -> None:
        deadline = time.monotonic() + seconds
        while not done() and not trigger.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def serve() -> None:
        trigger = asyncio.create_task(QueueTrigger(queue, handle).run(await app_context()))
        await until(lambda: {"taken", "batch-mate-1", "batch-mate-2"} <= set(handled), trigger)
        for body in ("later-1", "later-2"):
            sender.send_message(body)
        await until(lambda: handled.count("taken") == 2 and "later-2" in handled and not probe.queue_length(), trigger)
        trigger.cancel()
        await asyncio.gather(trigger, return_exceptions=True)

    sender.create_queue()
    try:
        for body in ("taken", "batch-mate-1", "batch-mate-2"):
            sender.send_message(body)
        with caplog.at_level(logging.WARNING, logger="fanout.serve"):
            on_loop(serve())
    finally:
        delete_queues(azurite.connection_string, [queue])

    assert sorted(handled) == ["batch-mate-1", "batch-mate-2", "later-1", "later-2", "taken", "taken"], handled
    unsettled = [r.getMessage() for r in caplog.records if "not settled" in r.getMessage()]
    assert len(unsettled) == 1 and queue in unsettled[0], unsettled


def test_a_message_that_is_no_base64_goes_to_poison_as_stored_and_stops_no_other(
    on_loop, azurite, app_env, monkeypatch
):
    """A message put by hand (`az storage message put --content ...`) is no base64: the host's encoding fails
    that one delivery, MAX_TRIES times, then moves it to poison; its batch-mates are handed over at once."""
    monkeypatch.setattr(serve_module, "MAX_TRIES", 2)
    queue = f"nob64-{secrets.token_hex(5)}"
    raw = QueueClient.from_connection_string(azurite.connection_string, queue)  # no encoding: as put by hand
    encoded = QueueClient.from_connection_string(azurite.connection_string, queue,
                                                 message_encode_policy=TextBase64EncodePolicy())  # fmt: skip
    poison = QueueClient.from_connection_string(azurite.connection_string, f"{queue}-poison")
    handled: list[str] = []

    async def handle(message: func.QueueMessage) -> None:
        handled.append(message.get_body().decode())

    async def serve() -> None:
        trigger = asyncio.create_task(QueueTrigger(queue, handle).run(await app_context()))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (len(handled) == 3 and _count(poison)):
            await asyncio.sleep(0.2)
        trigger.cancel()
        await asyncio.gather(trigger, return_exceptions=True)

    raw.create_queue()
    try:
        raw.send_message("hand-put, not base64 {!}")
        for body in ("good-1", "good-2", "good-3"):
            encoded.send_message(body)
        on_loop(serve())
        poisoned = [message.content for message in poison.peek_messages(max_messages=32)]
        left = raw.get_queue_properties().approximate_message_count
    finally:
        delete_queues(azurite.connection_string, [queue, f"{queue}-poison"])

    assert sorted(handled) == ["good-1", "good-2", "good-3"] and left == 0
    assert poisoned == ["hand-put, not base64 {!}"]


def _count(queue: QueueClient) -> int:
    try:
        return queue.get_queue_properties().approximate_message_count or 0
    except ResourceNotFoundError:
        return 0


def test_a_message_in_hand_when_serve_stops_is_visible_again_at_once(on_loop, azurite, app_env):
    queue = f"stopping-{secrets.token_hex(5)}"
    sender = QueueClient.from_connection_string(azurite.connection_string, queue,
                                                message_encode_policy=TextBase64EncodePolicy())  # fmt: skip
    started = asyncio.Event()

    async def handle(message: func.QueueMessage) -> None:
        started.set()
        await asyncio.sleep(3600)  # a long invocation, still running when serve stops

    async def serve_then_stop() -> None:
        trigger = asyncio.create_task(QueueTrigger(queue, handle).run(await app_context()))
        await asyncio.wait_for(started.wait(), 10)
        trigger.cancel()
        await asyncio.gather(trigger, return_exceptions=True)

    sender.create_queue()
    try:
        sender.send_message("in hand")
        on_loop(serve_then_stop())
        again = list(sender.receive_messages(max_messages=1, visibility_timeout=1))
    finally:
        delete_queues(azurite.connection_string, [queue])
    assert [message.content for message in again] == ["aW4gaGFuZA=="]  # "in hand", as stored


def test_what_the_blob_trigger_remembers_is_what_its_container_holds(on_loop, azurite, app_env):
    container = f"remembers-{secrets.token_hex(4)}"
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    blobs.create_container()
    handed: list[str] = []

    async def handle(blob: func.InputStream) -> None:
        handed.append(blob.name)

    async def polls() -> BlobTrigger:
        trigger, ctx = BlobTrigger(container, handle, parallel=2), await app_context()
        await trigger.poll(ctx)
        while len(handed) < 3:
            await asyncio.sleep(0.05)
        for name in ("a", "b"):
            blobs.delete_blob(name)  # a purge
        await trigger.poll(ctx)
        return trigger

    try:
        for name in ("a", "b", "c"):
            blobs.upload_blob(name, b"x")
        trigger = on_loop(polls())
    finally:
        blobs.delete_container()
    assert sorted(handed) == [f"{container}/{name}" for name in "abc"] and [n for n, _ in trigger.seen] == ["c"]
