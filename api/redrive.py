"""`POST /api/ingestions/{run_id}/redrive`: re-ingest the run's failed and stalled chunks."""

from __future__ import annotations

import azure.functions as func

from api.problems import json_response
from api.run_route import known_run
from ingestion.run import redrive_run


async def redrive_ingestion(req: func.HttpRequest) -> func.HttpResponse:
    found = await known_run(req)
    if isinstance(found, func.HttpResponse):
        return found
    return json_response(await redrive_run(*found))
