"""Under the Azure model (testkit/azure_model.py in front of Azurite's queue service): throttling with
503 ServerBusy and broken connections cost retries, never a message; a throttle that outlasts
STORAGE_MAX_RETRIES leaves the chunk at its checkpoint, and a redrive finishes it."""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterator

import httpx
import pytest

from core.context import app_context
from core.errors import QueueSendError
from core.storage import close_storage_clients
from fanout.demo_api import DemoApi, demo_ids
from ingestion.target import target_sender
from putmessage.sender import PACED_RETRIES
from testkit.azure_model import ACCOUNT_BUSY, QUEUE_BUSY, AzureModel, ModelConfig
from testkit.fault_scenarios import WINDOW, Lab, judge, summary_of

CHECKPOINT_EVERY = 100


@pytest.fixture
def model(azurite) -> Iterator[AzureModel]:
    model = AzureModel(ModelConfig(median_ms=0), queue_port=azurite.queue_port).start()
    yield model
    model.stop()


@pytest.fixture
def lab(azurite) -> Lab:
    return Lab(azurite)


def env_behind(lab: Lab, model: AzureModel, queue: str, source_url: str, **settings: str) -> dict[str, str]:
    """The app's settings with its queue service behind the model (blobs go straight to Azurite)."""
    azurite = lab.azurite
    proxied = azurite.connection_string.replace(f":{azurite.queue_port}/", f":{model.ports['queue']}/")
    return lab.env(queue, source_url, AzureWebJobsStorage=proxied, CHUNK_SIZE="1000",
                   INGEST_CHECKPOINT_EVERY=str(CHECKPOINT_EVERY), STORAGE_RETRY_BACKOFF="0.01", **settings)  # fmt: skip


def test_throttled_answer_is_azures_server_busy(model):
    model.configure(ModelConfig(median_ms=0, queue_rate=0, queue_burst=0))
    url = f"http://127.0.0.1:{model.ports['queue']}/devstoreaccount1/q/messages?sv=x"
    answer = httpx.post(url, content=b"<QueueMessage/>", headers={"x-ms-version": "2025-11-05",
                                                                  "x-ms-client-request-id": "abc"})  # fmt: skip

    assert (answer.status_code, answer.reason_phrase) == (503, QUEUE_BUSY)
    assert answer.headers["x-ms-error-code"] == "ServerBusy"
    assert answer.headers["x-ms-version"] == "2025-11-05"
    assert answer.headers["x-ms-client-request-id"] == "abc"
    assert answer.headers["content-type"] == "application/xml"
    body = answer.content.decode("utf-8-sig")
    request_id = answer.headers["x-ms-request-id"]
    assert body.startswith('<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>')
    assert f"{QUEUE_BUSY}\nRequestId:{request_id}\nTime:" in body

    model.configure(ModelConfig(median_ms=0, account_rate=0, account_burst=0))
    assert httpx.post(url, content=b"").reason_phrase == ACCOUNT_BUSY


def test_per_queue_throttling_gateway_answers_and_connection_resets_cost_retries_not_messages(lab, model):
    # a queue rate well under what one process sends on a loaded 2-core machine, so that it throttles there too
    model.configure(ModelConfig(median_ms=1, p99_ms=5, queue_rate=200, queue_burst=10, reset_rate=0.02,
                                gateway_rate=0.02))  # fmt: skip
    api = DemoApi(count=3_000).start()
    queue = lab.new_queue()
    try:
        env = env_behind(lab, model, queue, api.url, STORAGE_MAX_RETRIES="20", STORAGE_RETRY_MAX_DELAY="0.5")
        summary = summary_of(lab.cli("run", "--json", env=env))
    finally:
        api.stop()
    outcome = judge("throttled", "", summary["state"], demo_ids(3_000), lab.probe(queue).drain())
    kinds = ("throttled_queue", "reset_before", "reset_after", "gateway")
    stats = {kind: model.stats[f"{kind} {queue}"] for kind in kinds}

    assert (summary["state"], outcome.lost) == ("completed", 0), summary
    assert stats["throttled_queue"] > 100 and stats["reset_before"] > 0 and stats["reset_after"] > 0, stats
    assert stats["gateway"] > 0, stats
    # every answer lost after Azurite stored the message is one duplicate, and nothing else is
    assert outcome.duplicates == stats["reset_after"], stats
    # every 503, every gateway answer and every reset was one retry of a Put Message, and the run's summary
    # says how many
    assert summary["send_retries"] == sum(stats.values())


def test_throttle_past_storage_max_retries_leaves_the_chunk_at_its_checkpoint_and_redrive_finishes(lab, model):
    model.configure(ModelConfig(median_ms=0, queue_rate=0, queue_burst=1_200))  # 1,200 messages, then 503 only
    api = DemoApi(count=2_000).start()
    queue = lab.new_queue()
    run_id = f"throttled-{secrets.token_hex(4)}"
    try:
        env = env_behind(lab, model, queue, api.url, STORAGE_MAX_RETRIES="2")
        failed_run = lab.cli("run", "--json", "--parallel", "1", "--run-id", run_id, env=env)  # chunk after chunk
        stalled = json.loads(lab.cli("status", run_id, "--json", env=env).stdout)
        in_queue = lab.probe(queue).queue_length()
        model.configure(ModelConfig(median_ms=0, queue_rate=math.inf))  # the throttle lifts
        redrive = json.loads(lab.cli("redrive", run_id, "--json", env=env).stdout)
        final = json.loads(lab.cli("status", run_id, "--json", env=env).stdout)
    finally:
        api.stop()
    checkpoint = stalled["messages"]["enqueued"]

    assert failed_run.returncode == 2, failed_run.stderr
    assert "ServerBusy: The server is busy." in failed_run.stderr
    assert "gave up after 3 attempts" in failed_run.stderr
    assert stalled["state"] == "ingesting" and stalled["chunks"]["ingested"] == 1, stalled
    assert stalled["messages"]["send_retries"] >= 2, stalled
    assert in_queue == 1_200  # exactly what the throttle let through: nothing lost in flight
    assert 1_000 <= checkpoint <= 1_200, stalled  # chunk 0 whole, chunk 1 up to its last checkpoint (200 at most)
    assert [(c["index"], c["state"], c["queued"]) for c in redrive["chunks"]] == [(1, "ingested", 2_000 - checkpoint)]
    assert final["state"] == "completed"
    outcome = judge("throttled for good", "", final["state"], demo_ids(2_000), lab.probe(queue).drain())
    assert outcome.lost == 0
    assert outcome.duplicates == 1_200 - checkpoint <= CHECKPOINT_EVERY + WINDOW


@pytest.mark.parametrize(("max_retries", "requests"), [("2", PACED_RETRIES + 3), ("0", 1)])
def test_a_send_the_queue_always_refuses_goes_again_in_its_turn_then_backs_off_and_gives_up(
    on_loop, azurite, app_env, monkeypatch, model, max_retries, requests
):
    """A 503 goes again through the pace at once, PACED_RETRIES times while more than one send is allowed,
    then STORAGE_MAX_RETRIES times with backoff; with STORAGE_MAX_RETRIES=0 not at all."""
    model.configure(ModelConfig(median_ms=0, queue_rate=0, queue_burst=0))
    proxied = azurite.connection_string.replace(f":{azurite.queue_port}/", f":{model.ports['queue']}/")
    monkeypatch.setenv("AzureWebJobsStorage", proxied)
    monkeypatch.setenv("STORAGE_MAX_RETRIES", max_retries)
    monkeypatch.setenv("STORAGE_RETRY_BACKOFF", "0.01")

    async def send_once() -> str:
        try:
            send = await target_sender(await app_context())
            with pytest.raises(QueueSendError) as refused:
                await send("refused")
            return str(refused.value)
        finally:
            await close_storage_clients()  # its connections to the model close before the model stops

    reason = on_loop(send_once())

    assert f"answered 503 ServerBusy: {QUEUE_BUSY}" in reason
    assert f"(gave up after {int(max_retries) + 1} attempts)" in reason
    assert model.stats[f"throttled_queue {app_env['QUEUE_NAME']}"] == requests
