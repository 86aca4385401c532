"""Queue accounts as partitions, and chunks ingested in parallel, against real Azurites."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

import runs.local
from chunking.request import IngestionRequest
from core.context import app_context
from core.settings import Settings
from fanout.azurite import start_azurite
from fanout.demo_api import demo_ids
from ingestion.target import partition_of
from runs.local import run_here
from testkit.cli_runner import cli
from testkit.storage_probe import StorageProbe


@pytest.fixture
def second_account(monkeypatch):
    """A second storage account (its own Azurite), named by the connection setting SECOND_ACCOUNT."""
    azurite = start_azurite()
    monkeypatch.setenv("SECOND_ACCOUNT", azurite.connection_string)
    yield azurite
    azurite.close()


def test_every_id_lands_once_in_its_hashed_queue_of_its_account_and_status_counts_each_queue(
    on_loop, azurite, second_account, app_env, monkeypatch
):
    monkeypatch.setenv("SOURCE_URL", app_env["SOURCE_URL"].replace("10000", "2000"))
    monkeypatch.setenv("QUEUE_ACCOUNTS", "AzureWebJobsStorage,SECOND_ACCOUNT")
    monkeypatch.setenv("QUEUE_PARTITIONS", "2")
    settings = Settings.from_env()
    request = IngestionRequest(source="default", chunk_size=300, run_id="two-accounts")

    status = on_loop(run_here(on_loop(app_context(settings)), request, parallel=3))

    queue = app_env["QUEUE_NAME"]
    targets = [(account, f"{queue}-{n}") for account in (azurite, second_account) for n in range(2)]
    landed: dict[str, int] = {}
    for position, (account, name) in enumerate(targets):
        bodies = StorageProbe(account.connection_string, name).drain()
        assert bodies and all(partition_of(text, 4) == position for text in bodies)
        landed |= Counter(bodies)
    assert landed == dict.fromkeys(demo_ids(2000), 1)  # every ID, once, in the queue its hash names
    assert status.state == "completed"
    by_queue = status.messages_by_queue
    assert list(by_queue) == [f"{a}/{queue}-{n}" for a in ("AzureWebJobsStorage", "SECOND_ACCOUNT") for n in (0, 1)]
    assert list(by_queue.values()) == [sum(partition_of(t, 4) == n for t in demo_ids(2000)) for n in range(4)]


def test_run_parallel_ingests_several_chunks_at_once_and_sends_each_id_once(on_loop, app_env, probe, monkeypatch):
    monkeypatch.setenv("SOURCE_URL", app_env["SOURCE_URL"].replace("10000", "1200"))
    real_ingest = runs.local.ingest_chunk
    in_flight = Counter[str]()

    async def counting_ingest(ctx, ref, blob=None):  # the real ingestion, with a count of chunks in flight
        in_flight["now"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["now"])
        try:
            await asyncio.sleep(0.05)  # let the other chunks start
            return await real_ingest(ctx, ref, blob)
        finally:
            in_flight["now"] -= 1

    monkeypatch.setattr(runs.local, "ingest_chunk", counting_ingest)
    settings = Settings.from_env()
    request = IngestionRequest(source="default", chunk_size=100, run_id="parallel-run")

    status = on_loop(run_here(on_loop(app_context(settings)), request, parallel=4))

    assert status.state == "completed" and status.chunks.total == 12
    assert in_flight["most"] == 4
    assert sorted(probe.drain()) == sorted(demo_ids(1200))


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_run_refuses_a_parallel_count_it_cannot_use(value):
    result = cli("run", "--parallel", value, env={})
    assert result.returncode == 2
    assert "--parallel: must be a whole number from 1 to 64" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_drains_every_queue_and_verifies_each_id_from_the_queue_side():
    result = cli("demo", "--count", "3000", "--accounts", "2", "--json", env={"CHUNK_SIZE": "1000"})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["state"] == "completed"
    assert summary["verification"] == {
        "ids": 3000, "received": 3000, "missing": 0, "duplicates": 0, "foreign": 0, "misplaced": 0,
        "duplicate_bound": 3 * 1000, "left_in_queues": 0, "messages": 3000,
    }  # fmt: skip  # the bound: a chunk re-sends at most 1000 + 16 messages, and holds 1000
    assert summary["queue_matches_source"] is True


def test_the_batched_enveloped_demo_unpacks_and_verifies_each_id_and_its_seq():
    """`make demo BATCH=…` end to end: the consumer unpacks each batch, checks every ID once and its seq."""
    result = cli("demo", "--count", "3000", "--accounts", "1", "--batch-max-items", "100", "--envelope", "--json",
                 env={"CHUNK_SIZE": "1000"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["state"] == "completed" and summary["queue_matches_source"] is True, summary
    verification = summary["verification"]
    assert (verification["received"], verification["missing"], verification["duplicates"]) == (3000, 0, 0)
    assert verification["messages"] == 30  # 100 IDs a message, none across a chunk's end
