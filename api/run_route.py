"""What every `/api/ingestions/{run_id}…` handler starts with: the app's context and a known run."""

from __future__ import annotations

import azure.functions as func

from api.problems import problem
from core.context import Context, app_context
from core.contract import RUN_ID_PATTERN
from core.errors import SettingsError


async def known_run(req: func.HttpRequest) -> tuple[Context, str] | func.HttpResponse:
    """The context and the route's run id, or the problem response to answer instead (500, 404)."""
    run_id = req.route_params.get("run_id", "")
    try:
        ctx = await app_context()
    except SettingsError as exc:
        return problem(500, f"the app is misconfigured: {exc}")
    if not RUN_ID_PATTERN.match(run_id) or await ctx.runs.get(run_id) is None:
        return problem(404, f"no run {run_id!r}; start one with POST /api/ingestions", run_id=run_id)
    return ctx, run_id
