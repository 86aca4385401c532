"""The function app as the host indexes it, read from `app.get_functions()` in a fresh process per setting."""

from __future__ import annotations

import subprocess

import pytest

from testkit.indexed_functions import indexed_functions


@pytest.fixture(scope="module")
def default_functions() -> dict[str, list[dict]]:
    return indexed_functions()


def test_app_has_exactly_the_documented_functions(default_functions):
    assert sorted(default_functions) == [
        "cancel_ingestion", "continue_chunking", "dashboard", "delete_ingestion", "get_ingestion_chunks",
        "get_ingestion_status", "ingest_chunk", "list_ingestions", "openapi", "redrive_chunk", "redrive_ingestion",
        "start_ingestion", "sweep_stalled_chunks",
    ]  # fmt: skip


def test_continuations_arrive_on_the_control_queue(default_functions):
    (trigger,) = default_functions["continue_chunking"]
    assert (trigger["type"], trigger["queueName"], trigger["connection"]) == (
        "queueTrigger", "chunking-continuations", "AzureWebJobsStorage",
    )  # fmt: skip


def test_chunk_redrives_arrive_on_the_redrive_queue(default_functions):
    (trigger,) = default_functions["redrive_chunk"]
    assert (trigger["type"], trigger["queueName"], trigger["connection"]) == (
        "queueTrigger", "chunk-redrives", "AzureWebJobsStorage",
    )  # fmt: skip


def test_the_redrive_queue_is_a_setting():
    (trigger,) = indexed_functions(REDRIVE_QUEUE="redrives-elsewhere")["redrive_chunk"]
    assert trigger["queueName"] == "redrives-elsewhere"


def test_http_routes_methods_and_auth_levels(default_functions):
    start = default_functions["start_ingestion"][0]
    status = default_functions["get_ingestion_status"][0]
    redrive = default_functions["redrive_ingestion"][0]
    assert (start["type"], start["route"], start["methods"], start["authLevel"]) == (
        "httpTrigger", "ingestions", ["POST"], "FUNCTION",
    )  # fmt: skip
    assert (status["type"], status["route"], status["methods"], status["authLevel"]) == (
        "httpTrigger", "ingestions/{run_id}", ["GET"], "FUNCTION",
    )  # fmt: skip
    assert (redrive["route"], redrive["methods"], redrive["authLevel"]) == (
        "ingestions/{run_id}/redrive", ["POST"], "FUNCTION",
    )  # fmt: skip
    listing = default_functions["list_ingestions"][0]
    cancel = default_functions["cancel_ingestion"][0]
    assert (listing["route"], listing["methods"], listing["authLevel"]) == ("ingestions", ["GET"], "FUNCTION")
    assert (cancel["route"], cancel["methods"], cancel["authLevel"]) == (
        "ingestions/{run_id}/cancel", ["POST"], "FUNCTION",
    )  # fmt: skip


def test_blob_trigger_polls_the_chunk_container_by_default(default_functions):
    (trigger,) = default_functions["ingest_chunk"]
    assert trigger == {
        "direction": "IN", "type": "blobTrigger", "name": "chunk", "path": "chunks/{name}",
        "connection": "AzureWebJobsStorage", "source": "LogsAndContainerScan",
    }  # fmt: skip


def test_event_grid_setting_yields_an_event_grid_blob_trigger():
    (trigger,) = indexed_functions(BLOB_TRIGGER_SOURCE="EventGrid", CHUNK_CONTAINER="batches")["ingest_chunk"]
    assert (trigger["source"], trigger["path"]) == ("EventGrid", "batches/{name}")


def test_in_azure_a_missing_source_url_stops_the_app_at_startup():
    identity = {
        "AzureWebJobsStorage": "",
        "AzureWebJobsStorage__blobServiceUri": "https://acct.blob.core.windows.net",
        "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net",
        "SOURCE_URL": "",
    }
    with pytest.raises(subprocess.CalledProcessError) as failure:
        indexed_functions(**identity)
    assert "SOURCE_URL is not set: in Azure the app needs the source API's URL" in failure.value.stderr


@pytest.mark.parametrize(
    ("env", "error"),
    [
        (
            {"AzureWebJobsStorage": "AccountName=acct;AccountKey=s3cr3t%%%"},
            "AzureWebJobsStorage is not a storage connection string: AccountKey must be base64",
        ),
        ({"REDRIVE_QUEUE": "ingest"}, "QUEUE_NAME and REDRIVE_QUEUE both name the queue 'ingest'"),
    ],
)
def test_storage_settings_azure_cannot_work_with_stop_the_app_at_startup_without_showing_a_key(env, error):
    with pytest.raises(subprocess.CalledProcessError) as failure:
        indexed_functions(**env)
    assert error in failure.value.stderr
    assert "s3cr3t" not in failure.value.stderr


def test_unknown_trigger_source_is_refused_with_the_allowed_values():
    with pytest.raises(subprocess.CalledProcessError) as failure:
        indexed_functions(BLOB_TRIGGER_SOURCE="Polling")
    assert "BLOB_TRIGGER_SOURCE must be one of LogsAndContainerScan, EventGrid" in failure.value.stderr


def test_purge_is_a_delete_on_the_run_route(default_functions):
    delete = default_functions["delete_ingestion"][0]
    assert (delete["type"], delete["route"], delete["methods"], delete["authLevel"]) == (
        "httpTrigger", "ingestions/{run_id}", ["DELETE"], "FUNCTION",
    )  # fmt: skip


def test_the_sweeper_runs_every_five_minutes_unless_sweep_schedule_says_otherwise(default_functions):
    (timer,) = default_functions["sweep_stalled_chunks"]
    assert (timer["type"], timer["schedule"], timer["runOnStartup"]) == ("timerTrigger", "0 */5 * * * *", False)
    (hourly,) = indexed_functions(SWEEP_SCHEDULE="0 0 * * * *")["sweep_stalled_chunks"]
    assert hourly["schedule"] == "0 0 * * * *"
