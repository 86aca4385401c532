"""`python -m fanout serve`'s HTTP side as a process of its own: a body is read only for a request a function
takes (its route, its key), handed over as sent (no Content-Encoding undone, as the host does), and SIGTERM
ends the process as cleanly as Ctrl-C."""

from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from fanout.azurite import PROJECT_ROOT, free_port

KEY = f"key-{secrets.token_hex(8)}"


@pytest.fixture
def served(app_env, tmp_path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    env = {**os.environ, **app_env, "FANOUT_FUNCTION_KEY": KEY, "CHUNK_CONTAINER": f"http-{secrets.token_hex(4)}"}
    with (tmp_path / "serve.log").open("w") as stderr:
        server = subprocess.Popen([sys.executable, "-m", "fanout", "serve", "--port", str(port)], cwd=PROJECT_ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)  # fmt: skip
    assert server.stdout is not None and "serving the app" in server.stdout.readline()
    yield f"http://127.0.0.1:{port}", server
    server.terminate()
    server.wait(timeout=20)


def _peak_memory_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def test_a_request_no_function_takes_is_answered_without_reading_its_body(served):
    base, server = served
    before = _peak_memory_mb(server.pid)
    body = b"x" * (60 * 1024 * 1024)

    def post(path: str) -> int:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.post(f"{base}{path}", content=body, timeout=60).status_code
        return 0

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(post, ["/api/no-such-route", "/api/ingestions", "/api/ingestions"]))
    grown = _peak_memory_mb(server.pid) - before
    assert sorted(statuses) == [401, 401, 404] and grown < 40, (statuses, f"{grown:.0f} MB")


def test_a_compressed_body_is_handed_over_as_sent_and_refused_as_no_json(served):
    base, _ = served
    answer = httpx.post(f"{base}/api/ingestions", content=gzip.compress(b'{"chunk_size": 10}'), timeout=30,
                        headers={"x-functions-key": KEY, "Content-Encoding": "gzip"})  # fmt: skip
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["detail"].startswith("body is not valid JSON") and "Traceback" not in answer.text


def test_sigterm_ends_serve_cleanly(served):
    _, server = served
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=20) == 0
    assert server.stdout is not None and "serve stopped" in server.stdout.read()
