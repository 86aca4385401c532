"""What the operations features rely on outside the code: host.json, the storage lifecycle rules, the KQL
query set, and reading Event Grid dead letters."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.contract import ChunkRef
from fanout.azurite import PROJECT_ROOT
from runs.deadletters import chunks_in_dead_letter
from testkit.bicep import config, parse

HOST = json.loads((PROJECT_ROOT / "host.json").read_text())


def test_host_json_sends_opentelemetry_and_sets_the_blob_extension_limits_explicitly():
    assert HOST["telemetryMode"] == "OpenTelemetry"
    assert HOST["extensions"]["blobs"] == {"maxDegreeOfParallelism": 8, "poisonBlobThreshold": 5}
    assert HOST["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}


def test_lifecycle_rules_delete_runs_after_retention_days_and_claim_checks_after_their_own():
    rules = config("modules/storage.bicep", "lifecycle")["config"]["properties"]["policy"]["rules"]  # under `if`
    runs, checks = rules
    assert runs["definition"]["filters"]["prefixMatch"] == "retentionPrefixes"
    assert runs["definition"]["actions"]["baseBlob"]["delete"] == {"daysAfterModificationGreaterThan": "retentionDays"}
    assert checks["enabled"] == {
        "operator": {"type": "greater_than", "operands": {"operand_1": "claimCheckRetentionDays", "operand_2": 0}}
    }  # 0: no claim-check rule
    # after the last write: a redrive writes a claim-check blob again, then sends a message that lives its TTL
    assert list(checks["definition"]["actions"]["baseBlob"]["delete"]) == ["daysAfterModificationGreaterThan"]
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


def evaluate(expression: Any, names: dict[str, Any]) -> Any:
    """The value of a pycep expression made of the operators and functions main.bicep's TTL arithmetic uses."""
    if isinstance(expression, str):
        return names[expression]
    if not isinstance(expression, dict):
        return expression
    if "function" in expression:
        function = expression["function"]
        args = [evaluate(arg, names) for arg in function["parameters"].values()]
        return {"max": max, "int": int, "empty": lambda value: not value}[function["type"]](*args)
    operator = expression["operator"]
    if operator["type"] == "conditional":  # only the branch taken is evaluated, as in Bicep
        branches = operator["operands"]
        return evaluate(branches["true_value" if evaluate(branches["condition"], names) else "false_value"], names)
    operands = {key: evaluate(value, names) for key, value in operator["operands"].items()}
    if operator["type"] == "minus":
        return -operands["integer_value"]
    a, b = operands["operand_1"], operands["operand_2"]
    return {"equals": a == b, "add": a + b, "divide": a // b}[operator["type"]]


@pytest.mark.parametrize(
    ("ttl", "days"),
    [("", 7), ("-1", 0), ("3600", 7), ("604800", 7), ("1209600", 14), ("1209601", 15)],
)
def test_the_claim_check_rule_follows_the_messages_ttl(ttl, days):
    """No rule when messages never expire (-1); otherwise never sooner than the TTL in whole days."""
    variables = parse("main.bicep")["variables"]
    names: dict[str, Any] = {"queueMessageTtl": ttl, "claimCheckRetentionDays": 7}
    names["messageTtlSeconds"] = evaluate(variables["messageTtlSeconds"]["value"], names)
    assert evaluate(variables["claimCheckDays"]["value"], names) == days
    assert parse("main.bicep")["modules"]["storage"]["config"]["params"]["claimCheckRetentionDays"] == "claimCheckDays"


def test_the_function_app_and_local_settings_turn_off_the_httpx_spans_that_would_carry_the_source_key():
    bicep = (PROJECT_ROOT / "infra" / "modules" / "function-app.bicep").read_text()
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS: 'httpx'" in bicep
    local = json.loads((PROJECT_ROOT / "local.settings.json.example").read_text())
    assert local["Values"]["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] == "httpx"
