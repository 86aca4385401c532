"""`GET /api/ingestions/{run_id}`: the run's status, or 404 problem+json."""

from __future__ import annotations

import azure.functions as func

from api.problems import json_response
from api.run_route import known_run
from core.status import run_status


async def get_ingestion_status(req: func.HttpRequest) -> func.HttpResponse:
    found = await known_run(req)
    if isinstance(found, func.HttpResponse):
        return found
    return json_response(await run_status(*found))
