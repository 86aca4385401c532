"""Wiring only: each trigger hands its input to a handler in chunking/, ingestion/ or fanout/."""

import azure.functions as func

from api.redrive import redrive_ingestion
from api.start import STATUS_ROUTE, start_ingestion
from api.status import get_ingestion_status
from chunking.continuation import continue_chunking_message
from core.settings import blob_trigger_source, chunk_container, control_queue
from ingestion.trigger import ingest_chunk_blob

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("start_ingestion")
@app.route(route="ingestions", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def start_ingestion_function(req: func.HttpRequest) -> func.HttpResponse:
    return await start_ingestion(req)


@app.function_name("get_ingestion_status")
@app.route(route=STATUS_ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def get_ingestion_status_function(req: func.HttpRequest) -> func.HttpResponse:
    return await get_ingestion_status(req)


@app.function_name("redrive_ingestion")
@app.route(route=STATUS_ROUTE + "/redrive", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def redrive_ingestion_function(req: func.HttpRequest) -> func.HttpResponse:
    return await redrive_ingestion(req)


@app.function_name("ingest_chunk")
@app.blob_trigger(
    arg_name="chunk",
    path=f"{chunk_container()}/{{name}}",
    connection="AzureWebJobsStorage",
    source=func.BlobSource(blob_trigger_source()),
)
async def ingest_chunk_function(chunk: func.InputStream) -> None:
    await ingest_chunk_blob(chunk)


@app.function_name("continue_chunking")
@app.queue_trigger(arg_name="msg", queue_name=control_queue(), connection="AzureWebJobsStorage")
async def continue_chunking_function(msg: func.QueueMessage) -> None:
    await continue_chunking_message(msg)
