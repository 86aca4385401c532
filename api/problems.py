"""RFC 9457 problem details: every HTTP error this app answers, as application/problem+json."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import azure.functions as func

PROBLEM_JSON = "application/problem+json"


def problem(status: int, detail: str, **extensions: Any) -> func.HttpResponse:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    body.update({key: value for key, value in extensions.items() if value is not None})
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype=PROBLEM_JSON)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json", headers=headers)
