"""`POST /api/ingestions`: validate, chunk the source, answer 202 with where to watch the run."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import azure.functions as func

from api.problems import json_response, problem
from chunking.request import parse_ingestion_request
from chunking.run import chunk_run
from core.context import app_context
from core.errors import RequestError, RunConflictError, SettingsError
from core.settings import Settings

STATUS_ROUTE = "ingestions/{run_id}"


async def start_ingestion(req: func.HttpRequest) -> func.HttpResponse:
    try:
        settings = Settings.from_env()
        request = parse_ingestion_request(req.get_body(), settings)
    except RequestError as exc:
        return problem(400, exc.detail, field=exc.field)
    except SettingsError as exc:
        return problem(500, f"the app is misconfigured: {exc}")
    try:
        record, _ = await chunk_run(await app_context(settings), request, settings.chunking_time_budget)
    except RunConflictError as exc:
        return problem(409, str(exc), run_id=request.run_id)
    status_path = f"/api/{STATUS_ROUTE.format(run_id=record.run_id)}"
    body = {
        "run_id": record.run_id,
        "status_url": _absolute(req.url, status_path),
        "state": record.state,
        "chunks": record.chunks,
        "messages": record.messages,
    }
    if record.state == "failed":
        return problem(502, record.error or "the source failed", **body)
    return json_response(body, status=202, headers={"Location": status_path})


def _absolute(request_url: str, path: str) -> str:
    parts = urlsplit(request_url)
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")) if parts.netloc else path
