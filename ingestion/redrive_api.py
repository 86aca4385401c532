"""`POST /api/ingestions/{run_id}/redrive`: re-ingest the run's failed and stalled chunks."""

from __future__ import annotations

import azure.functions as func

from fanout.chunk_contract import RUN_ID_PATTERN
from fanout.context import app_context
from fanout.errors import SettingsError
from fanout.problems import json_response, problem
from ingestion.run import redrive_run


async def redrive_ingestion(req: func.HttpRequest) -> func.HttpResponse:
    run_id = req.route_params.get("run_id", "")
    try:
        ctx = await app_context()
    except SettingsError as exc:
        return problem(500, f"the app is misconfigured: {exc}")
    if not RUN_ID_PATTERN.match(run_id) or await ctx.runs.get(run_id) is None:
        return problem(404, f"no run {run_id!r}; start one with POST /api/ingestions", run_id=run_id)
    return json_response(await redrive_run(ctx, run_id))
