"""Bad input gets a clear problem+json answer; a failing source fails the run with its reason."""

from __future__ import annotations

import json
import re
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.http import PROBLEM_JSON
from chunking.request import parse_ingestion_request
from core.contract import is_run_id
from core.errors import RequestError
from core.settings import Settings
from fanout.demo_api import DemoApi, Faults
from testkit.cli_runner import cli
from testkit.http_requests import body_of, get_status, post_ingestion

st_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=5,
)


def _as_body(fields: dict) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        (b"{not json", None, "body is not valid JSON"),
        (b"[1, 2]", None, "body must be a JSON object, got list"),
        ({"source": "nowhere"}, "source", "unknown source 'nowhere'; configured sources: default"),
        ({"source": 7}, "source", "source must be a string"),
        ({"chunk_size": 0}, "chunk_size", "chunk_size must be between 1 and 32000, got 0"),
        ({"chunk_size": 32001}, "chunk_size", "chunk_size must be between 1 and 32000, got 32001"),
        ({"chunk_size": "100"}, "chunk_size", 'chunk_size must be an integer, got "100"'),
        ({"chunk_size": True}, "chunk_size", "chunk_size must be an integer, got true"),
        ({"run_id": "../etc"}, "run_id", "run_id must be 1-63 characters"),
        ({"run_id": 12}, "run_id", "run_id must be 1-63 characters"),
        ({"run_id": "x\n"}, "run_id", "run_id must be 1-63 characters"),  # `$` would match before the newline
        ({"run_id": "x."}, "run_id", "run_id must be 1-63 characters"),  # Azure trims the dot: it would be `x`
        (b'{"chunk_size": ' + b"9" * 5000 + b"}", None, "body holds a number of 5000 digits"),
        (b'{"source": ' + b"[" * 5000 + b"]" * 5000 + b"}", None, "body is nested too deeply"),
        (
            {"url": "http://169.254.169.254/"},
            "url",
            "unknown field(s) url; allowed: source, chunk_size, run_id, max_concurrency",
        ),
    ],
)
def test_bad_request_answers_400_problem_json(on_loop, functions, app_env, body, field, detail):
    response = on_loop(functions["start_ingestion"](post_ingestion(body)))

    assert response.status_code == 400
    assert response.mimetype == PROBLEM_JSON
    problem = body_of(response)
    assert problem["status"] == 400 and problem["title"] == "Bad Request"
    assert problem["detail"].startswith(detail)
    assert problem.get("field") == field


@pytest.mark.parametrize("run_id", ["no-such-run", "x\n", "../other/x"])
def test_unknown_run_answers_404_problem_json(on_loop, functions, app_env, run_id):
    response = on_loop(functions["get_ingestion_status"](get_status(run_id)))

    assert response.status_code == 404
    assert response.mimetype == PROBLEM_JSON
    assert body_of(response)["detail"].startswith(f"no run {run_id!r}")


def test_a_body_over_the_cap_answers_413_problem_json(on_loop, functions, app_env):
    response = on_loop(functions["start_ingestion"](post_ingestion(b"[" * 100_000)))

    assert response.status_code == 413
    assert response.mimetype == PROBLEM_JSON
    assert body_of(response)["detail"] == (
        "the request body is 100000 bytes, over the 65536 this app accepts (HTTP_MAX_BODY_BYTES)"
    )


@pytest.mark.parametrize(
    ("function", "request_"),
    [("start_ingestion", post_ingestion({"run_id": "unreachable"})), ("get_ingestion_status", get_status("any"))],
)
def test_an_unexpected_failure_answers_500_problem_json_with_an_error_id_in_the_log(
    on_loop, functions, app_env, monkeypatch, caplog, function, request_
):
    with socket.socket() as closed:  # a port nobody listens on: storage is unreachable
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv(
        "AzureWebJobsStorage", re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", app_env["AzureWebJobsStorage"])
    )
    monkeypatch.setenv("STORAGE_MAX_RETRIES", "0")

    response = on_loop(functions[function](request_))

    assert response.status_code == 500
    assert response.mimetype == PROBLEM_JSON
    problem = body_of(response)
    assert problem["detail"] == (
        f"the app failed unexpectedly; the log has the details under error id {problem['error_id']}"
    )
    assert "Traceback" not in response.get_body().decode()
    (logged,) = [record for record in caplog.records if problem["error_id"] in record.getMessage()]
    assert logged.levelname == "ERROR" and "Traceback" in (logged.exc_text or "")


@pytest.mark.parametrize("run_id", ["../other/x", "x\n", "x."])
def test_the_cli_refuses_a_malformed_run_id_without_a_traceback(run_id):
    result = cli("status", run_id, env={})

    assert result.returncode == 2
    assert "argument RUN_ID: run_id must be 1-63 characters" in result.stderr
    assert "Traceback" not in result.stderr


def test_named_source_is_chosen_by_name(on_loop, functions, probe, demo_api, monkeypatch):
    monkeypatch.setenv("SOURCE_BILLING__URL", f"{demo_api.url}?count=7")
    response = on_loop(functions["start_ingestion"](post_ingestion({"source": "billing", "run_id": "named"})))

    assert response.status_code == 202
    assert body_of(response)["messages"] == 7


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        (Faults(status=503), "answered 503 Service Unavailable"),
        (Faults(non_json=True), "must answer a JSON array, got b'<html>"),
        (Faults(truncate=True), "failed: RemoteProtocolError"),
    ],
)
def test_failing_source_fails_the_run_with_its_reason(on_loop, functions, app_env, monkeypatch, faults, reason):
    api = DemoApi(count=100, faults=faults).start()
    try:
        monkeypatch.setenv("SOURCE_URL", api.url)
        monkeypatch.setenv("SOURCE_MAX_ATTEMPTS", "3")
        response = on_loop(functions["start_ingestion"](post_ingestion({"run_id": f"bad-source-{id(faults)}"})))
    finally:
        api.stop()

    assert response.status_code == 502
    assert response.mimetype == PROBLEM_JSON
    assert reason in body_of(response)["detail"]
    status = body_of(on_loop(functions["get_ingestion_status"](get_status(body_of(response)["run_id"]))))
    assert status["state"] == "failed"
    assert reason in status["error"]
    if faults.status or faults.truncate:
        assert status["error"].endswith("(gave up after 3 attempts)")


@given(st.binary(max_size=200) | st.dictionaries(st.text(max_size=12), st_json, max_size=4).map(_as_body))
def test_no_body_crashes_request_validation(body):
    """Any body either parses into a valid request or is refused with a RequestError (a 400)."""
    settings = Settings.from_env({})
    try:
        request = parse_ingestion_request(body, settings)
    except RequestError as error:
        assert error.detail
    else:
        assert request.source in settings.sources
        assert 1 <= request.chunk_size <= 32_000
        assert is_run_id(request.run_id)
