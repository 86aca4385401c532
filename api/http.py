"""The HTTP API: every route's handler, problem+json answers, and one table from exceptions to statuses.

Handlers raise; `answers_problems` turns what they raise into an RFC 9457 `application/problem+json`
answer: a known error with its status and message, anything else a 500 with an error id that is also
in the log, never a stack trace.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, TypedDict
from urllib.parse import urlsplit, urlunsplit

import azure.functions as func

from chunking.request import parse_ingestion_request
from core.context import app_context
from core.errors import (
    ContractError,
    FanoutError,
    RequestError,
    RequestTooLargeError,
    RunConflictError,
    RunFailedError,
    RunNotFoundError,
    SettingsError,
)
from core.redact import public_reason
from core.run_store import RecordState
from core.settings import Settings
from core.status import FINAL_STATES, RunStatus
from runs.cancel import cancel_run
from runs.chunk_map import chunk_map
from runs.listing import list_runs, parse_list_query
from runs.purge import purge_run
from runs.redrive import redrive_run
from runs.start import start_run
from runs.status import get_status

PROBLEM_JSON = "application/problem+json"
INGESTIONS_ROUTE = "ingestions"
RUN_ROUTE = "ingestions/{run_id}"
REDRIVE_ROUTE = RUN_ROUTE + "/redrive"
CANCEL_ROUTE = RUN_ROUTE + "/cancel"
OPENAPI_ROUTE = "openapi.json"
CHUNKS_ROUTE = RUN_ROUTE + "/chunks"
log = logging.getLogger(__name__)

# (exception, status, what the detail starts with); the first match wins.
STATUS_OF_ERROR: tuple[tuple[type[FanoutError], int, str], ...] = (
    (RequestTooLargeError, 413, ""),
    (RequestError, 400, ""),
    (RunNotFoundError, 404, ""),
    (RunConflictError, 409, ""),
    (RunFailedError, 502, ""),
    (SettingsError, 500, "the app is misconfigured: "),
    (ContractError, 500, "what storage holds is out of shape: "),
)


class Started(TypedDict):
    """The body of `POST /api/ingestions`' 202 (and the extension members of its 502)."""

    run_id: str
    status_url: str
    state: RecordState
    chunks: int | None
    messages: int | None


class Redriven(TypedDict):
    """The body of `POST /api/ingestions/{run_id}/redrive`'s 202."""

    run_id: str
    status_url: str
    scheduled: list[int]
    chunking_resumed: bool


Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]


def problem(status: int, detail: str, **extensions: Any) -> func.HttpResponse:
    """An RFC 9457 answer; its texts redacted and bounded, as everything that leaves the app."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": public_reason(detail),
    }
    body.update({key: public_reason(value) if isinstance(value, str) else value
                 for key, value in extensions.items() if value is not None})  # fmt: skip
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype=PROBLEM_JSON)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json", headers=headers)


def answers_problems(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def answer(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return await handler(req)
        except FanoutError as exc:
            for kind, status, prefix in STATUS_OF_ERROR:
                if isinstance(exc, kind):  # a 500 is the operator's to fix: logged, with an id to find it by
                    error_id = _logged(req, prefix + exc.detail) if status == 500 else None
                    return problem(status, prefix + exc.detail, error_id=error_id, **exc.fields)
            return _unexpected(req, exc)
        except Exception as exc:
            return _unexpected(req, exc)

    return answer


def _unexpected(req: func.HttpRequest, exc: BaseException) -> func.HttpResponse:
    error_id = _logged(req, "unexpected", exc)
    return problem(500, f"the app failed unexpectedly; the log has the details under error id {error_id}",
                   error_id=error_id)  # fmt: skip


def _logged(req: func.HttpRequest, what: str, exc: BaseException | None = None) -> str:
    """Logs a 500's cause under a new error id, which its answer carries."""
    error_id = secrets.token_hex(8)
    log.error("error %s answering %s %s: %s", error_id, req.method, urlsplit(req.url).path, what, exc_info=exc)
    return error_id


@answers_problems
async def start_ingestion(req: func.HttpRequest) -> func.HttpResponse:
    """`POST /api/ingestions`: validate, chunk the source, answer 202 with where to watch the run."""
    ctx = await app_context()
    request = parse_ingestion_request(req.get_body(), ctx.settings)
    record, _ = await start_run(ctx, request, budget=ctx.settings.chunking_time_budget)
    status_path = _status_path(record.run_id)
    body = Started(
        run_id=record.run_id,
        status_url=_absolute(req.url, status_path),
        state=record.state,
        chunks=record.chunks,
        messages=record.messages,
    )
    if record.state == "failed":
        raise RunFailedError(record.error or "the source failed", **body)
    return json_response(body, status=202, headers=_in_progress(ctx.settings, status_path))


@answers_problems
async def get_ingestion_status(req: func.HttpRequest) -> func.HttpResponse:
    """`GET /api/ingestions/{run_id}`: the run's status; `202` with `Retry-After` while it runs, as Durable
    Functions' status endpoint answers, `200` once it is completed, failed or cancelled."""
    run_id = req.route_params.get("run_id", "")
    ctx = await app_context()
    status = await get_status(ctx, run_id)
    if status.state in FINAL_STATES:
        return json_response(status.to_json())
    return json_response(status.to_json(), status=202, headers=_in_progress(ctx.settings, _status_path(run_id), status))


@answers_problems
async def get_ingestion_chunks(req: func.HttpRequest) -> func.HttpResponse:
    """`GET /api/ingestions/{run_id}/chunks`: the run's chunks as ranges of indexes by state (runs/chunk_map.py)."""
    result = await chunk_map(await app_context(), req.route_params.get("run_id", ""))
    return json_response(result.to_json())


@answers_problems
async def list_ingestions(req: func.HttpRequest) -> func.HttpResponse:
    """`GET /api/ingestions?state=&created_after=&limit=&continuation=`: runs, newest first, a page at a time."""
    query = parse_list_query(req.params)
    page = await list_runs(await app_context(), query)
    runs = [{**status.summary(), "status_url": _absolute(req.url, _status_path(status.run_id))} for status in page.runs]
    return json_response({"runs": runs, "continuation": page.continuation, "unreadable": page.unreadable})


@answers_problems
async def cancel_ingestion(req: func.HttpRequest) -> func.HttpResponse:
    """`POST /api/ingestions/{run_id}/cancel`: chunking stops at its next page, each chunk at its next
    checkpoint; answers 202 with where to watch the run (`409` once it completed or failed)."""
    run_id = req.route_params.get("run_id", "")
    ctx = await app_context()
    status = await cancel_run(ctx, run_id)
    status_path = _status_path(run_id)
    body = {"run_id": run_id, "status_url": _absolute(req.url, status_path), **status.summary()}
    return json_response(body, status=202, headers=_in_progress(ctx.settings, status_path, status))


@answers_problems
async def redrive_ingestion(req: func.HttpRequest) -> func.HttpResponse:
    """`POST /api/ingestions/{run_id}/redrive`: schedule the run's failed, stalled and never-started chunks
    for the `redrive_chunk` trigger, and its chunking if it was stopped, failed or left; answer 202 with
    the chunks' indexes, whether chunking carries on, and where to watch the run."""
    run_id = req.route_params.get("run_id", "")
    ctx = await app_context()
    redriven = await redrive_run(ctx, run_id)
    status_path = _status_path(run_id)
    body = Redriven(
        run_id=run_id,
        status_url=_absolute(req.url, status_path),
        scheduled=redriven.scheduled,
        chunking_resumed=redriven.chunking_resumed,
    )
    return json_response(body, status=202, headers=_in_progress(ctx.settings, status_path))


@answers_problems
async def delete_ingestion(req: func.HttpRequest) -> func.HttpResponse:
    """`DELETE /api/ingestions/{run_id}`: purge a finished run (runs/purge.py); 409 while it runs."""
    result = await purge_run(await app_context(), req.route_params.get("run_id", ""))
    return json_response(result.to_json())


def _in_progress(settings: Settings, status_path: str, status: RunStatus | None = None) -> dict[str, str]:
    """Where to watch a run, and when to look again: a tenth of its ETA, 2-30 s, else HTTP_RETRY_AFTER."""
    eta = status.eta_seconds if status is not None else None
    wait = settings.http_retry_after if eta is None else min(30, max(2, math.ceil(eta / 10)))
    return {"Location": status_path, "Retry-After": str(wait)}


def _status_path(run_id: str) -> str:
    return "/api/" + RUN_ROUTE.format(run_id=run_id)


def _absolute(request_url: str, path: str) -> str:
    parts = urlsplit(request_url)
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")) if parts.netloc else path
