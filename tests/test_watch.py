"""`python -m fanout watch`: follows a run in local storage or through a deployed app's status URL, shows its
progress, and exits with its final state (0 completed, 1 failed, 3 cancelled; 2 when it cannot watch)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from fanout.azurite import PROJECT_ROOT
from fanout.watch import progress_line
from testkit.app_server import AppServer
from testkit.chunked_runs import delivered
from testkit.cli_runner import cli
from testkit.http_requests import chunk_blob, ingest_every_chunk, post_cancel, post_ingestion


@pytest.fixture
def ids_200(monkeypatch, app_env) -> dict[str, str]:
    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("10000", "200"))
    return {**app_env, "SOURCE_URL": os.environ["SOURCE_URL"]}


def test_watch_exits_with_the_final_state_of_a_local_run(on_loop, functions, probe, ids_200):
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "watched-done", "chunk_size": 100})))
    ingest_every_chunk(on_loop, functions, probe, "watched-done")
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "watched-cancelled", "chunk_size": 100})))
    on_loop(functions["cancel_ingestion"](post_cancel("watched-cancelled")))
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "watched-failed", "chunk_size": 100})))
    broken = probe.chunk_names("watched-failed")[0]
    on_loop(functions["ingest_chunk"](chunk_blob("chunks", broken, b"{broken\n", {"message_count": "1"})))

    done = cli("watch", "watched-done", env=ids_200)
    cancelled = cli("watch", "watched-cancelled", env=ids_200)
    failed = cli("watch", "watched-failed", env=ids_200)
    unknown = cli("watch", "nobody-watched", env=ids_200)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("completed [" + "#" * 30 + "] 100% 200/200 messages, 2/2 chunks")
    assert done.stdout.splitlines()[-1] == "watched-done: completed"
    assert (cancelled.returncode, cancelled.stdout.splitlines()[-1]) == (3, "watched-cancelled: cancelled")
    assert (failed.returncode, failed.stdout.splitlines()[-1]) == (1, "watched-failed: failed")
    assert unknown.returncode == 2 and "no run 'nobody-watched'" in unknown.stderr


def test_watch_follows_a_deployed_app_to_the_end_with_its_function_key(on_loop, functions, probe, ids_200):
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "watched-remote", "chunk_size": 100})))
    first, second = probe.chunk_names("watched-remote")
    on_loop(functions["ingest_chunk"](delivered(probe, first)))
    app = AppServer(functions["get_ingestion_status"], key="the-key")
    try:
        wrong_key = cli("watch", "watched-remote", "--url", app.url, "--key", "not-the-key", env=ids_200)
        looks_before = app.looks
        watcher = subprocess.Popen(
            [sys.executable, "-m", "fanout", "watch", "watched-remote", "--url", app.url + "/"],
            cwd=PROJECT_ROOT, env={**os.environ, **ids_200, "FANOUT_FUNCTION_KEY": "the-key"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for(lambda: app.looks > looks_before)  # it saw the run half done …
        on_loop(functions["ingest_chunk"](delivered(probe, second)))  # … which then ends
        out, err = watcher.communicate(timeout=60)
    finally:
        app.stop()

    assert wrong_key.returncode == 2 and "pass the function key with --key" in wrong_key.stderr
    assert "not-the-key" not in wrong_key.stderr + wrong_key.stdout
    assert watcher.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("ingesting [" + "#" * 15 + "-" * 15 + "]  50% 100/200 messages, 1/2 chunks")
    assert lines[-2].startswith("completed [") and lines[-1] == "watched-remote: completed"


def test_the_progress_line_shows_the_bar_the_pace_and_the_eta():
    status = {
        "state": "ingesting", "messages": {"fetched": 100_000, "enqueued": 45_000},
        "chunks": {"total": 20, "ingested": 9, "failed": 1}, "messages_per_second": 850.4, "eta_seconds": 64.7,
    }  # fmt: skip
    assert progress_line(status) == (
        "ingesting [##############----------------]  45% 45,000/100,000 messages, 9/20 chunks, 1 failed, "
        "850 msg/s, ETA 1m05s"
    )


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("interval", ["0", "-1", "nan", "inf", "soon"])
def test_an_interval_that_would_spin_or_never_look_again_is_refused(interval):
    refused = cli("watch", "any-run", "--interval", interval, env=dict(os.environ))
    assert refused.returncode == 2 and "must be seconds from 0.1 to 3600" in refused.stderr
