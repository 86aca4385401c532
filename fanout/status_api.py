"""`GET /api/ingestions/{run_id}`: the run's status, or 404 problem+json."""

from __future__ import annotations

import azure.functions as func

from fanout.chunk_contract import RUN_ID_PATTERN
from fanout.context import app_context
from fanout.errors import SettingsError
from fanout.problems import json_response, problem
from fanout.status import run_status


async def get_ingestion_status(req: func.HttpRequest) -> func.HttpResponse:
    run_id = req.route_params.get("run_id", "")
    try:
        ctx = await app_context()
    except SettingsError as exc:
        return problem(500, f"the app is misconfigured: {exc}")
    status = await run_status(ctx, run_id) if RUN_ID_PATTERN.match(run_id) else None
    if status is None:
        return problem(404, f"no run {run_id!r}; start one with POST /api/ingestions", run_id=run_id)
    return json_response(status)
