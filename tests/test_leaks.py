"""A source's secrets (its header values, its URL's query string) reach no status, problem answer or
log line, even when the source echoes them back in an error."""

from __future__ import annotations

import json
import logging
from email.message import Message

import pytest

from testkit.http_requests import body_of, get_status, post_ingestion
from testkit.loopback_api import Answer, LoopbackApi

API_KEY = "hdr-7f3a9c1e5b"
QUERY_KEY = "qry-2d8e4b6a0c"


def echoing_refusal(path: str, headers: Message) -> Answer:
    """Every GET refused with 401 and a body echoing the request's path and headers."""
    body = json.dumps({"error": "unauthorized", "path": path, "headers": dict(headers)}).encode()
    return 401, {"Content-Type": "application/json"}, body


@pytest.fixture
def echoing_source(app_env, monkeypatch):
    api = LoopbackApi(echoing_refusal)
    monkeypatch.setenv("SOURCE_URL", f"{api.url}?api_key={QUERY_KEY}&count=10")
    monkeypatch.setenv("SOURCE_HEADERS", json.dumps({"x-api-key": API_KEY}))
    yield api
    api.stop()


def test_a_source_echoing_its_secrets_leaks_them_to_no_status_answer_or_log(on_loop, functions, echoing_source, caplog):
    caplog.set_level(logging.DEBUG)

    refused = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "leak-check"})))
    status = on_loop(functions["get_ingestion_status"](get_status("leak-check")))

    assert refused.status_code == 502
    problem, run = body_of(refused), body_of(status)
    assert run["state"] == "failed"
    assert "401" in problem["detail"] and "401" in run["error"]  # the reason is still there
    seen = {"502 body": refused.get_body().decode(), "status": status.get_body().decode(), "log": caplog.text}
    assert {where: [key for key in (API_KEY, QUERY_KEY) if key in text] for where, text in seen.items()} == {
        "502 body": [], "status": [], "log": []
    }  # fmt: skip
