"""Wiring only: each trigger hands its input to a handler in api/, chunking/ or ingestion/."""

import os

import azure.functions as func

from api.dashboard import DASHBOARD_ROUTE, dashboard
from api.http import (
    CANCEL_ROUTE,
    CHUNKS_ROUTE,
    INGESTIONS_ROUTE,
    OPENAPI_ROUTE,
    REDRIVE_ROUTE,
    RUN_ROUTE,
    cancel_ingestion,
    delete_ingestion,
    get_ingestion_chunks,
    get_ingestion_status,
    list_ingestions,
    redrive_ingestion,
    start_ingestion,
)
from api.openapi import get_openapi
from chunking.continuation import continue_chunking_message
from core.logs import failures_redacted
from core.settings import BLOB_TRIGGER_SOURCE, CHUNK_CONTAINER, CONTROL_QUEUE, REDRIVE_QUEUE, SWEEP_SCHEDULE, Settings
from core.telemetry import configure_telemetry
from ingestion.trigger import ingest_chunk_blob
from runs.redrive import redrive_chunk_message
from runs.sweep import sweep_stalled_chunks

Settings.from_env()  # bad or missing settings (SOURCE_URL in Azure) stop the app at startup, with their names
configure_telemetry()  # OpenTelemetry to Application Insights, only when APPLICATIONINSIGHTS_CONNECTION_STRING is set
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("start_ingestion")
@app.route(route=INGESTIONS_ROUTE, methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def start_ingestion_function(req: func.HttpRequest) -> func.HttpResponse:
    return await start_ingestion(req)


@app.function_name("get_ingestion_status")
@app.route(route=RUN_ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def get_ingestion_status_function(req: func.HttpRequest) -> func.HttpResponse:
    return await get_ingestion_status(req)


@app.function_name("redrive_ingestion")
@app.route(route=REDRIVE_ROUTE, methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def redrive_ingestion_function(req: func.HttpRequest) -> func.HttpResponse:
    return await redrive_ingestion(req)


@app.function_name("list_ingestions")
@app.route(route=INGESTIONS_ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def list_ingestions_function(req: func.HttpRequest) -> func.HttpResponse:
    return await list_ingestions(req)


@app.function_name("cancel_ingestion")
@app.route(route=CANCEL_ROUTE, methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def cancel_ingestion_function(req: func.HttpRequest) -> func.HttpResponse:
    return await cancel_ingestion(req)


@app.function_name("ingest_chunk")
@app.blob_trigger(
    arg_name="chunk",
    path=f"{CHUNK_CONTAINER.read(os.environ)}/{{name}}",
    connection="AzureWebJobsStorage",
    source=func.BlobSource(BLOB_TRIGGER_SOURCE.read(os.environ)),
)
@failures_redacted
async def ingest_chunk_function(chunk: func.InputStream) -> None:
    await ingest_chunk_blob(chunk)


@app.function_name("continue_chunking")
@app.queue_trigger(arg_name="msg", queue_name=CONTROL_QUEUE.read(os.environ), connection="AzureWebJobsStorage")
@failures_redacted
async def continue_chunking_function(msg: func.QueueMessage) -> None:
    await continue_chunking_message(msg)


@app.function_name("redrive_chunk")
@app.queue_trigger(arg_name="msg", queue_name=REDRIVE_QUEUE.read(os.environ), connection="AzureWebJobsStorage")
@failures_redacted
async def redrive_chunk_function(msg: func.QueueMessage) -> None:
    await redrive_chunk_message(msg)


@app.function_name("delete_ingestion")
@app.route(route=RUN_ROUTE, methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
async def delete_ingestion_function(req: func.HttpRequest) -> func.HttpResponse:
    return await delete_ingestion(req)


@app.function_name("openapi")
@app.route(route=OPENAPI_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def openapi_function(req: func.HttpRequest) -> func.HttpResponse:
    return await get_openapi(req)


@app.function_name("sweep_stalled_chunks")
@app.timer_trigger(arg_name="timer", schedule=SWEEP_SCHEDULE.read(os.environ), run_on_startup=False)
@failures_redacted
async def sweep_stalled_chunks_function(timer: func.TimerRequest) -> None:
    await sweep_stalled_chunks(timer)


@app.function_name("get_ingestion_chunks")
@app.route(route=CHUNKS_ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def get_ingestion_chunks_function(req: func.HttpRequest) -> func.HttpResponse:
    return await get_ingestion_chunks(req)


@app.function_name("dashboard")
@app.route(route=DASHBOARD_ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def dashboard_function(req: func.HttpRequest) -> func.HttpResponse:
    return dashboard(req)
