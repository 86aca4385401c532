"""What the operations features rely on outside the code: host.json, the storage lifecycle rules, the KQL
query set, and reading Event Grid dead letters."""

from __future__ import annotations

import json

import pytest

from core.contract import ChunkRef
from fanout.azurite import PROJECT_ROOT
from ingestion.deadletters import chunks_in_dead_letter
from tests.test_infra import config, parse

HOST = json.loads((PROJECT_ROOT / "host.json").read_text())


def test_host_json_sends_opentelemetry_and_sets_the_blob_extension_limits_explicitly():
    assert HOST["telemetryMode"] == "OpenTelemetry"
    assert HOST["extensions"]["blobs"] == {"maxDegreeOfParallelism": 8, "poisonBlobThreshold": 5}
    assert HOST["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}


def test_lifecycle_rules_delete_runs_after_retention_days_and_claim_checks_after_their_own():
    rules = config("modules/storage.bicep", "lifecycle")["properties"]["policy"]["rules"]
    runs, checks = rules
    assert runs["definition"]["filters"]["prefixMatch"] == "retentionPrefixes"
    assert runs["definition"]["actions"]["baseBlob"]["delete"] == {"daysAfterModificationGreaterThan": "retentionDays"}
    assert checks["definition"]["actions"]["baseBlob"]["delete"] == {
        "daysAfterCreationGreaterThan": "claimCheckRetentionDays"
    }
    main = parse("main.bicep")
    assert main["parameters"]["retentionDays"]["default"] == 7
    storage = main["modules"]["storage"]["config"]["params"]
    assert storage["retentionPrefixes"] == ["${chunkContainerName}/", "${runsContainerName}/"]


def test_the_kql_query_set_covers_progress_failed_chunks_and_throughput():
    text = (PROJECT_ROOT / "infra" / "queries.kql").read_text()
    for section in ["run progress", "failed chunks", "throughput"]:
        assert f"// {section}" in text.lower()
    for name in ["chunk.messages_enqueued", "chunk.seconds", "chunk.storage_retries", "run_id", "chunk_index"]:
        assert name in text


@pytest.mark.parametrize(
    ("body", "chunks"),
    [
        (b'[{"subject": "/blobServices/default/containers/chunks/blobs/r1/000002.jsonl"}]', [ChunkRef("r1", 2)]),
        (b'{"subject": "/blobServices/default/containers/chunks/blobs/r1/000002.jsonl"}', [ChunkRef("r1", 2)]),
        (b'[{"subject": "/blobServices/default/containers/other/blobs/r1/000002.jsonl"}]', []),
        (b'[{"subject": "/blobServices/default/containers/chunks/blobs/../000002.jsonl"}, {"subject": 3}]', []),
    ],
)
def test_dead_letters_name_the_chunks_of_their_events_and_nothing_else(body, chunks):
    assert chunks_in_dead_letter(body, "chunks") == chunks


@pytest.mark.parametrize("body", [b"<html>", b"[1, 2]", b'"text"', b"[" * 100_000])
def test_a_dead_letter_that_is_not_a_list_of_events_is_refused(body):
    with pytest.raises(ValueError):
        chunks_in_dead_letter(body, "chunks")
