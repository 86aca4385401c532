"""The HTTP API's OpenAPI 3.1 description, built from the code's own definitions: the routes (api/http.py),
the request body's fields with their bounds (chunking/request.py's FIELDS, which the validator reads too),
the answers' types (api/schema.py reads their annotations) and the statuses of the errors (STATUS_OF_ERROR).

`OPERATIONS` names each HTTP function of function_app.py with its method and route; a test compares the two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from api.dashboard import DASHBOARD_ROUTE
from api.http import (
    CANCEL_ROUTE,
    CHUNKS_ROUTE,
    INGESTIONS_ROUTE,
    OPENAPI_ROUTE,
    PROBLEM_JSON,
    REDRIVE_ROUTE,
    RUN_ROUTE,
    Redriven,
    Started,
    answers_problems,
    json_response,
)
from api.schema import json_schema, without
from chunking.request import FIELDS, body_rules
from core.contract import RUN_ID_JSON_PATTERN
from core.settings import HTTP_RETRY_AFTER, Settings
from core.status import STATES, RunStatus
from runs.chunk_map import ChunkMap
from runs.listing import MAX_LIMIT
from runs.purge import PurgeResult

ROUTE_PREFIX = "/api/"
KEY_SCHEMES = ("function_key_header", "function_key_query")
PROBLEMS = {
    400: "the request is invalid: `detail` says why, `field` names the field or parameter",
    404: "no run has this id",
    409: "the run's state does not allow it (`state` says which it is in)",
    413: "the body is over `HTTP_MAX_BODY_BYTES`",
    500: "the app failed, is misconfigured or found storage out of shape: `detail` says which, and `error_id` is "
    "what the log has it under",
    502: "the source failed: the run is `failed`, and the members of the 202 answer say which run",
}


@dataclass(frozen=True)
class Operation:
    """One HTTP function: its name in function_app.py (the operationId), method, route and answers."""

    function: str
    method: str
    route: str
    summary: str
    answers: dict[int, dict[str, Any]]  # success status: its response object
    problems: tuple[int, ...]
    parameters: tuple[dict[str, Any], ...] = ()
    body: dict[str, Any] | None = None
    secured: bool = True
    tags: tuple[str, ...] = field(default=("runs",))


def _status_schema() -> dict[str, Any]:
    return without(json_schema(RunStatus, optional=("messages_by_queue", "backlog")), "settled")


def _summary_schema() -> dict[str, Any]:
    """A run as a list (and a cancel) answers it: its status without the failed chunks' errors, with its URL."""
    return without(_status_schema(), "failed_chunks", status_url={"type": "string"})


def _json(description: str, schema: dict[str, Any], *, watch: bool = False) -> dict[str, Any]:
    """A JSON answer; `watch`: with `Location` and `Retry-After`, where and when to look at the run again."""
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if watch:
        answer["headers"] = {
            "Location": {"$ref": "#/components/headers/Location"},
            "Retry-After": {"$ref": "#/components/headers/Retry-After"},
        }
    return answer


def _request_body(settings: Settings) -> dict[str, Any]:
    properties = {spec.name: spec.described(settings) for spec in FIELDS}
    schema = {"type": "object", "properties": properties, "additionalProperties": False,
              "allOf": [body_rules(settings)]}  # fmt: skip
    return {"required": False, "content": {"application/json": {"schema": schema}}}


RUN_ID = {"name": "run_id", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": RUN_ID_JSON_PATTERN},
          "description": "the run's id; one that names no run, or breaks the pattern, answers 404"}  # fmt: skip
LIST_PARAMETERS = (
    {"name": "state", "in": "query", "schema": {"enum": list(STATES)}, "description": "only runs in this state"},
    {"name": "created_after", "in": "query", "schema": {"type": "string", "format": "date-time"},
     "description": "only runs created after this ISO 8601 time (without an offset: UTC)"},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
     "description": "runs a page holds at most (a filtered page may hold fewer, even none)"},
    {"name": "continuation", "in": "query", "schema": {"type": "string"},
     "description": "the token the previous page answered; a token the app did not give answers 400"},
)  # fmt: skip


def operations() -> tuple[Operation, ...]:
    status, summary = _status_schema(), _summary_schema()
    return (
        Operation("start_ingestion", "post", INGESTIONS_ROUTE, "Start a run: chunk the source, then ingest it",
                  {202: _json("chunked (or chunking on past the budget); the queue fills behind it",
                              json_schema(Started), watch=True)},
                  (400, 409, 413, 500, 502), body={}),
        Operation("list_ingestions", "get", INGESTIONS_ROUTE, "List runs, newest first, a page at a time",
                  {200: _json("a page of runs; the list has ended when `continuation` is null", {
                      "type": "object", "required": ["runs", "continuation", "unreadable"],
                      "additionalProperties": False,
                      "properties": {"runs": {"type": "array", "items": summary},
                                     "continuation": {"type": ["string", "null"]},
                                     "unreadable": {"type": "object", "additionalProperties": {"type": "string"},
                                                    "description": "run id → why its records cannot be read"}}})},
                  (400, 500), parameters=LIST_PARAMETERS),
        Operation("get_ingestion_status", "get", RUN_ROUTE, "A run's status",
                  {200: _json("the run is completed, failed or cancelled", status),
                   202: _json("the run is chunking or ingesting", status, watch=True)},
                  (404, 500), parameters=(RUN_ID,)),
        Operation("cancel_ingestion", "post", CANCEL_ROUTE, "Cancel a run",
                  {202: _json("cancelled: chunking stops at its next page, each chunk at its next checkpoint",
                              summary, watch=True)},
                  (404, 409, 500), parameters=(RUN_ID,)),
        Operation("redrive_ingestion", "post", REDRIVE_ROUTE,
                  "Redrive a run's failed, stopped, stalled and never-started chunks, and its chunking if it stopped",
                  {202: _json("the chunks scheduled, and whether chunking carries on", json_schema(Redriven),
                              watch=True)},
                  (404, 409, 500), parameters=(RUN_ID,)),
        Operation("delete_ingestion", "delete", RUN_ROUTE, "Purge a finished run",
                  {200: _json("what the purge deleted", json_schema(PurgeResult))},
                  (404, 409, 500), parameters=(RUN_ID,)),
        Operation("get_ingestion_chunks", "get", CHUNKS_ROUTE, "A run's chunks as ranges of indexes by state",
                  {200: _json("the chunk map", json_schema(ChunkMap))}, (404, 500), parameters=(RUN_ID,)),
        Operation("dashboard", "get", DASHBOARD_ROUTE, "The dashboard page",
                  {200: {"description": "an HTML page that reads this API",
                         "content": {"text/html": {"schema": {"type": "string"}}}}}, (), tags=("meta",)),
        Operation("openapi", "get", OPENAPI_ROUTE, "This document",
                  {200: _json("the OpenAPI 3.1 description of this API", {"type": "object"})},
                  (500,), secured=False, tags=("meta",)),
    )  # fmt: skip


def openapi_document(settings: Settings, server: str | None = None) -> dict[str, Any]:
    """The document; `server`: the app's base URL (scheme and host) when known."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations():
        answers = {str(status): answer for status, answer in op.answers.items()}
        answers |= {str(status): {"$ref": f"#/components/responses/{status}"} for status in op.problems}
        if op.secured:
            answers["401"] = {"description": "the function key is missing or wrong (the Functions host answers)"}
        entry: dict[str, Any] = {
            "operationId": op.function, "summary": op.summary, "tags": list(op.tags), "responses": answers,
            "security": [{scheme: []} for scheme in KEY_SCHEMES] if op.secured else [],
        }  # fmt: skip
        if op.parameters:
            entry["parameters"] = list(op.parameters)
        if op.body is not None:
            entry["requestBody"] = _request_body(settings)
        paths.setdefault(ROUTE_PREFIX + op.route, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "Azure Queue fan-out", "version": "1",
                 "description": "Ingestion runs: a source's IDs, chunked into blobs, each ID a Storage Queue message."},
        "servers": [{"url": server or "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "function_key_header": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                                        "description": "a function key (or the host key) of the app"},
                "function_key_query": {"type": "apiKey", "in": "query", "name": "code",
                                       "description": "the same key as a query parameter"},
            },
            "headers": {
                "Location": {"description": "the run's status URL, as a path", "schema": {"type": "string"}},
                "Retry-After": {"description": f"seconds until it is worth looking again: a tenth of the ETA, "
                                f"2-30 s, else `{HTTP_RETRY_AFTER.name}`",
                                "schema": {"type": "integer", "minimum": 1}},
            },
            "responses": {str(status): _problem(status, meaning) for status, meaning in PROBLEMS.items()},
            "schemas": {"Problem": _PROBLEM},
        },
    }  # fmt: skip


_ROUTES = re.compile(r"/api(?:/|$)", re.IGNORECASE)  # the routes' prefix (host.json's routePrefix), any case
_PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details; texts are redacted and bounded, never a stack trace",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "detail": {"type": "string"}, "field": {"type": "string"}, "error_id": {"type": "string"},
        "state": {"type": "string"},
    },
}  # fmt: skip


def _problem(status: int, meaning: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"$ref": "#/components/schemas/Problem"}
    if status == 502:
        schema = {"allOf": [schema, {"required": list(Started.__annotations__)}]}
    return {"description": meaning, "content": {PROBLEM_JSON: {"schema": schema}}}


@answers_problems
async def get_openapi(req: func.HttpRequest) -> func.HttpResponse:
    """`GET /api/openapi.json` (anonymous: it holds no data): this API's OpenAPI 3.1 description."""
    parts = urlsplit(req.url)  # the app's origin and any path before its routes: never the query (`?code=`)
    origin = f"{parts.scheme}://{parts.netloc}{_ROUTES.split(parts.path, 1)[0]}" if parts.netloc else None
    return json_response(openapi_document(Settings.from_env(), origin))
