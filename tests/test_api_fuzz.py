"""Schemathesis against the app's HTTP routes as `python -m fanout serve` serves them (a stand-in for the
Functions host), a bounded number of examples per operation: every answer conforms to the OpenAPI document
(status, content type, headers, body), no 500 comes without an `error_id`, none carries a stack trace, and
no request leaves a run that cannot be read and redriven."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from fanout.azurite import PROJECT_ROOT, free_port
from fanout.client import FanoutApiError, FanoutClient

KEY = f"key-{secrets.token_hex(8)}"
EXAMPLES = 5  # per operation


@pytest.fixture
def served(shared_azurite, demo_api):
    """A `fanout serve` of its own for each test, its queues and
    containers new: no run another test left is its work."""
    env = {
        **os.environ, "AzureWebJobsStorage": shared_azurite.connection_string, "FANOUT_FUNCTION_KEY": KEY,
        "SOURCE_URL": f"{demo_api.url}?count=40", "QUEUE_NAME": f"fuzz-{secrets.token_hex(4)}",
        "RUN_EVENTS_QUEUE": f"fuzz-events-{secrets.token_hex(4)}",
        "REDRIVE_QUEUE": f"fuzz-redrives-{secrets.token_hex(4)}", "CHUNK_CONTAINER": f"fuzz-{secrets.token_hex(4)}",
        "RUNS_CONTAINER": f"fuzz-runs-{secrets.token_hex(4)}",
    }  # fmt: skip
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "fanout", "serve", "--port", str(port)], cwd=PROJECT_ROOT,
                              env=env, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stdout is not None and "serving the app" in server.stdout.readline()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_every_operation_answers_as_documented_and_leaves_every_run_resumable(served):
    schema = schemathesis.openapi.from_url(f"{served}/api/openapi.json")
    answered: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        label = operation.label

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def conforms(case: schemathesis.Case) -> None:
            response = case.call_and_validate(
                headers={"x-functions-key": KEY},
                excluded_checks=[not_a_server_error, positive_data_acceptance],
                timeout=30,
            )
            if response.status_code == 400:  # a schema-valid request refused: only a token this app did not sign,
                problem = response.json()  # a batch_input over its 8 KiB, or one whose escaping needs more
                unsayable = ("bytes as JSON", "with this batch_input")  # batch_max_bytes: JSON Schema cannot say
                assert problem.get("field") == "continuation" or any(
                    reason in problem["detail"] for reason in unsayable
                ), response.text
            answered.setdefault(label, set()).add(response.status_code)  # noqa: B023 (called in this iteration only)
            assert "Traceback" not in response.text and 'File "' not in response.text
            if response.status_code >= 500 and response.status_code != 502:
                assert response.json().get("error_id"), response.text

        conforms()
    assert sorted(answered) == sorted(operation.label for operation in operations), answered
    with httpx.Client(base_url=f"{served}/api/", headers={"x-functions-key": KEY}, timeout=30) as client:
        runs = client.get("ingestions", params={"limit": 100}).json()["runs"]
        for run in runs:
            status = client.get(f"ingestions/{run['run_id']}")
            redrive = client.post(f"ingestions/{run['run_id']}/redrive")
            assert status.status_code in (200, 202) and redrive.status_code in (202, 409), (run, redrive.text)


def test_the_python_client_drives_a_run_through_every_route(served):
    with FanoutClient(served, key=KEY) as client:
        started = client.start(chunk_size=10, run_id="by-the-client")
        seen: list[str] = []
        final = client.wait(started["run_id"], interval=0.2, timeout=60, on_status=lambda s: seen.append(s["state"]))
        listed = client.list(state="completed", limit=100)
        with pytest.raises(FanoutApiError) as conflict:
            client.cancel("by-the-client")
        redriven = client.redrive("by-the-client")
        purged = client.purge("by-the-client")
        with pytest.raises(FanoutApiError) as missing:
            client.status("by-the-client")

    assert final["state"] == "completed" and final["messages"]["enqueued"] == 40 and seen[-1] == "completed"
    assert "by-the-client" in [run["run_id"] for run in listed["runs"]]
    assert conflict.value.status == 409 and conflict.value.problem["detail"].startswith("run 'by-the-client'")
    assert redriven["scheduled"] == [] and purged["chunk_blobs"] == 4
    assert missing.value.status == 404 and missing.value.problem["title"] == "Not Found"
