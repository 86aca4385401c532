"""QUEUE_ACCOUNTS: target queues spread over storage accounts by a stable hash, counted per queue."""

from __future__ import annotations

import base64
import json

import pytest

from core.delivery import Delivery
from core.errors import SettingsError
from core.run_store import ChunkStatus, RunRecord
from core.settings import Settings
from core.status import derive_status
from fanout.consumer import Tally
from fanout.demo_api import demo_id
from ingestion.target import Spread, partition_of

ACCOUNT_KEY = "S2V5"  # base64 of "Key": never echoed
CONNECTION = f"DefaultEndpointsProtocol=https;AccountName=second;AccountKey={ACCOUNT_KEY};EndpointSuffix=core.net"
IDENTITY = {
    "AzureWebJobsStorage__blobServiceUri": "https://main.blob.core.windows.net",
    "AzureWebJobsStorage__queueServiceUri": "https://main.queue.core.windows.net",
    "AzureWebJobsStorage__clientId": "app-identity",
    "SOURCE_URL": "https://source.example/ids",
}


def test_by_default_the_target_is_the_app_storage_account():
    settings = Settings.from_env({"QUEUE_PARTITIONS": "2"})
    (account,) = settings.queue_accounts
    assert account.name == "AzureWebJobsStorage"
    assert account.storage == settings.storage
    assert settings.queue_targets == ["AzureWebJobsStorage/ingest-0", "AzureWebJobsStorage/ingest-1"]


def test_accounts_are_uris_with_the_app_identity_or_connection_setting_names():
    env = IDENTITY | {
        "QUEUE_ACCOUNTS": " AzureWebJobsStorage , https://third.queue.core.windows.net/ ,SECOND,FOURTH",
        "SECOND": CONNECTION,
        "FOURTH__queueServiceUri": "https://fourth.queue.core.windows.net",
        "FOURTH__clientId": "fourth-identity",
    }
    main, third, second, fourth = Settings.from_env(env).queue_accounts
    assert main.storage.queue_service_uri == "https://main.queue.core.windows.net"
    assert (third.name, third.storage.queue_service_uri) == ("https://third.queue.core.windows.net",) * 2
    assert (third.storage.connection_string, third.storage.client_id) == (None, "app-identity")
    assert (second.name, second.storage.connection_string) == ("SECOND", CONNECTION)
    assert (fourth.name, fourth.storage.client_id) == ("FOURTH", "fourth-identity")
    assert fourth.storage.queue_service_uri == "https://fourth.queue.core.windows.net"
    assert len(Settings.from_env(env).queue_targets) == 4  # one queue (QUEUE_PARTITIONS=1) in each


@pytest.mark.parametrize(
    ("accounts", "error"),
    [
        ("AzureWebJobsStorage,,X", "QUEUE_ACCOUNTS, entry 2 is empty"),
        ("MISSING", "QUEUE_ACCOUNTS, entry 1 names MISSING, which is not set: set MISSING to a connection string"),
        ("ftp://x.queue.core.windows.net", "entry 1 is not a queue service URI"),
        ("https://x.queue.core.windows.net?sv=2024&sig=SECRET", "no query string"),
        ("https://user:pw@x.queue.core.windows.net", "no user"),
        ("not a name!", "entry 1 is neither a queue service URI nor a setting name"),
        ("NOT_STORAGE", "NOT_STORAGE \\(in QUEUE_ACCOUNTS\\) is not a storage connection string"),
        ("SECOND,SECOND", "lists the same account twice \\(SECOND and SECOND\\)"),
        (",".join(["SECOND"] * 51), "lists 51 accounts; at most 50"),
    ],
)
def test_a_queue_account_that_cannot_work_is_refused_without_echoing_secrets(accounts, error):
    env = {"QUEUE_ACCOUNTS": accounts, "SECOND": CONNECTION, "NOT_STORAGE": f"password={ACCOUNT_KEY}"}
    with pytest.raises(SettingsError, match=error) as raised:
        Settings.from_env(env)
    assert ACCOUNT_KEY not in str(raised.value) and "SECRET" not in str(raised.value)


def test_routing_is_stable_and_with_one_account_the_same_as_partitions_alone():
    ids = [f"id-{n}" for n in range(3000)]
    counts = Spread(ids, 6)(len(ids))  # 2 accounts x 3 partitions
    assert sum(counts) == 3000 and min(counts) > 400  # every target takes its share
    for text in ids[:200]:
        target = partition_of(text, 6)
        assert target % 3 == partition_of(text, 3)  # the queue in the account is the one-account queue
    assert Spread(ids, 1)(10) == ()  # one target: `sent` says it all
    assert sum(Spread(ids, 6)(1000)) == 1000  # a checkpoint counts only what was sent


def test_a_chunks_counts_asked_checkpoint_after_checkpoint_are_the_counts_counted_afresh():
    ids = [f"id-{n}" for n in range(3000)]
    counted_on = Spread(ids, 6)
    for sent in [0, 1, 1000, 1000, 2999, 3000, 1500]:  # growing, then fewer (counted afresh)
        assert counted_on(sent) == Spread(ids, 6)(sent)


def test_status_counts_messages_per_target_queue():
    record = RunRecord("r", "default", 10, created_at="2026-11-23T19:00:00.000Z").chunked(3, 30)
    chunks = [
        ChunkStatus(0, "ingested", sent=10, count=10, updated_at="t0", by_queue=(4, 6)),
        ChunkStatus(1, "ingesting", sent=5, count=10, updated_at="t1", by_queue=(2, 3)),
        ChunkStatus(2, "ingesting", sent=7, count=10, updated_at="t2", by_queue=(1, 2, 4)),  # other targets then
    ]
    status = derive_status(record, chunks, targets=["A/ingest", "B/ingest"])
    assert status.to_json()["messages_by_queue"] == {"A/ingest": 6, "B/ingest": 9, "unknown": 7}
    assert derive_status(record, chunks, targets=["A/ingest"]).messages_by_queue == {"A/ingest": 22}
    assert "messages_by_queue" not in derive_status(record, chunks).to_json()  # not asked for: not shown


def test_the_demo_tally_counts_each_id_by_decoding_it_not_by_trusting_the_sender():
    tally = Tally(5)
    for text in [demo_id(0), demo_id(1), demo_id(1), demo_id(4), demo_id(5), "not-an-id"]:
        tally.record(base64.b64encode(text.encode()))
    tally.record(b"%%% not base64")
    assert (tally.received, tally.missing, tally.duplicates, tally.foreign) == (7, 2, 1, 3)  # 5 is past the count


def test_the_demo_tally_unpacks_batches_and_checks_each_items_seq():
    tally = Tally(6, Delivery(batch_max_items=3, envelope=True))
    for first, indexes in ((0, [0, 1, 2]), (3, [3, 5, 4]), (0, [0, 1, 2])):  # 4 and 5 swapped; the first again
        items = json.dumps([demo_id(index) for index in indexes])
        tally.record(base64.b64encode(f'{{"run_id":"r","first_seq":{first},"items":{items}}}'.encode()))
    tally.record(base64.b64encode(b'{"items": "not a list"}'))
    assert (tally.received, tally.items, tally.missing, tally.duplicates) == (4, 9, 0, 3)
    assert (tally.misplaced, tally.foreign, tally.unreadable) == (2, 1, 1)
