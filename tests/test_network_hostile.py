"""Proxies, request ids, storage answers and source tokens against what a hostile review tried: a token
endpoint that trickles or names an endless life, a proxy that refuses with a body or never answers CONNECT,
a proxy password with an unencoded `#`, an exception leaving a trigger, a queue deleted under a running app.
Real loopback servers and Azurite; the first line of each docstring is the promise."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from core.errors import SettingsError
from core.proxy import proxy_of
from core.settings import Settings
from fanout.demo_api import DemoApi
from putmessage.connection_pool import ConnectionPool
from testkit.http_requests import post_ingestion, post_redrive, run_queued, status_of
from testkit.loopback_api import LoopbackApi
from testkit.token_issuer import signed_in_source

CLIENT_ID = "review-client"
CLIENT_SECRET = "rv~Secret.9TzXr4Wn_x7Qp"
PAGE = 30


class TokenEndpoint:
    """A token endpoint answering every POST with `body(token)` (the token a fresh `tok_…`), or writing its answer
    itself with `respond`; counts the calls; the source accepts any token it issued."""

    def __init__(self, body: Callable[[str], bytes] | None = None,
                 respond: Callable[[BaseHTTPRequestHandler], None] | None = None) -> None:  # fmt: skip
        self.calls = 0
        self.issued: list[str] = []
        self._lock = threading.Lock()

        def answer(path: str, headers: object) -> tuple[int, dict[str, str], bytes]:
            token = f"tok_{secrets.token_urlsafe(24)}"
            with self._lock:
                self.calls += 1
                self.issued.append(token)
            assert body is not None
            return 200, {"Content-Type": "application/json"}, body(token)

        def counted(handler: BaseHTTPRequestHandler) -> None:
            with self._lock:
                self.calls += 1
            assert respond is not None
            respond(handler)

        self._api = LoopbackApi(answer if body else None, respond=counted if respond else None)
        self.url = self._api.url.replace("/ids", "/token")

    def accepts(self, header: str | None) -> bool:
        return (header or "").removeprefix("Bearer ") in self.issued

    def stop(self) -> None:
        self._api.stop()


@pytest.fixture
def token_source(app_env, monkeypatch) -> Iterator[Callable[..., tuple[TokenEndpoint, DemoApi]]]:
    made: list[tuple[TokenEndpoint, DemoApi]] = []

    def make(endpoint: TokenEndpoint, count: int = 300) -> tuple[TokenEndpoint, DemoApi]:
        source = DemoApi(count, pagination="cursor", page_size=PAGE, authorize=endpoint.accepts).start()
        made.append((endpoint, source))
        for key, value in signed_in_source(source.url, endpoint.url, CLIENT_ID, CLIENT_SECRET).items():
            monkeypatch.setenv(key, value)
        return endpoint, source

    yield make
    for endpoint, source in made:
        source.stop()
        endpoint.stop()


# --- token endpoints answering odd things ----------------------------------------------------------------


def test_a_huge_integer_expires_in_fails_the_run_visibly_not_with_an_overflow(on_loop, functions, probe, token_source):
    """Expected: `"expires_in": 1e400 as an integer` is taken as a long life (or refused naming SOURCE_TOKEN_URL);
    not an OverflowError that makes a bare 500 and leaves the run without a reason."""
    huge = "1" + "0" * 400
    token_source(
        TokenEndpoint(
            lambda token: (
                b'{"access_token": "%b", "token_type": "Bearer", "expires_in": %b}' % (token.encode(), huge.encode())
            )
        )
    )
    answer = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "huge-expiry"})))
    status = status_of(on_loop, functions, "huge-expiry")

    assert answer.status_code != 500, answer.get_body()
    assert status["state"] != "chunking" or status.get("error"), status
    if status["state"] == "failed":
        assert "SOURCE_TOKEN_URL" in (status.get("error") or ""), status


def test_a_token_endpoint_that_trickles_its_answer_fails_the_run_within_timeout_times_attempts(
    on_loop, functions, probe, token_source, monkeypatch
):
    """Expected (docs/reliability.md: 'a token endpoint that fails or hangs fails the run within SOURCE_TIMEOUT x
    SOURCE_MAX_ATTEMPTS, naming SOURCE_TOKEN_URL'): an endpoint sending one byte every half SOURCE_TIMEOUT is cut
    off as a source answer is at SOURCE_READ_DEADLINE; the run fails naming SOURCE_TOKEN_URL in seconds, not
    after the invocation's whole time budget (and then again in every continuation)."""

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "60000")
        handler.end_headers()
        try:
            for _ in range(60000):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.25)
        except OSError:
            pass

    token_source(TokenEndpoint(respond=trickle))
    for key, value in {"SOURCE_TIMEOUT": "0.5", "SOURCE_MAX_ATTEMPTS": "2", "SOURCE_READ_DEADLINE": "2",
                       "CHUNKING_TIME_BUDGET": "12"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)

    began = time.monotonic()
    on_loop(functions["start_ingestion"](post_ingestion({"run_id": "trickled-token"})))
    took = time.monotonic() - began
    status = status_of(on_loop, functions, "trickled-token")

    assert status["state"] == "failed" and "SOURCE_TOKEN_URL" in (status.get("error") or ""), (took, status)
    assert took < 6, took


# --- proxies ------------------------------------------------------------------------------------------------


def connect_answer(answer: bytes) -> str:
    """What a pool's request raises when its proxy answers CONNECT with `answer` (in one write)."""

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    async def run() -> str:
        listener = await asyncio.start_server(proxy, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        pool = ConnectionPool("https://storage.test:443/acct/q", 1, None, 5.0,
                              proxy_of(f"http://ops:pw-1234567@127.0.0.1:{port}", "HTTPS_PROXY"))  # fmt: skip
        try:
            await pool.request(b"POST /acct/q/messages HTTP/1.1\r\n\r\n")
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            pool.close()
            listener.close()
        return "no failure"

    return asyncio.run(run())


@pytest.mark.parametrize(
    "answer",
    [
        # Squid, and most proxies, answer a refused CONNECT with a body (an HTML page), in the same segment
        b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="corp"\r\n'
        b"Content-Type: text/html\r\nContent-Length: 26\r\n\r\n<html>access denied</html>",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden",
    ],
)
def test_a_proxy_refusing_connect_with_a_body_is_named_by_its_status(answer):
    """Expected (docs/reliability.md: 'the proxy refuses a CONNECT (407 bad credentials, 403, 502) ... its reason
    naming the proxy's answer'): the reason names the status the proxy gave (407 / 403), whether or not its answer
    carries a body; not 'the proxy sent bytes after its answer to CONNECT'."""
    failure = connect_answer(answer)
    status = answer.split(b" ")[1].decode()
    assert f"HTTP/1.1 {status}" in failure, failure


@pytest.mark.parametrize("value", ["http://ops:2024#Pa55word@proxy.corp:3128", "http://ops:77?secret@proxy.corp:3128"])
def test_a_proxy_url_whose_password_is_not_percent_encoded_is_a_settings_error(value):
    """Expected: a proxy URL with a fragment or a query (what a `#` or `?` left unencoded in a password makes of it) is
    refused at start-up naming HTTPS_PROXY; it is not taken as the proxy `ops:2024` with no credentials (every call
    then fails at run time against a host named after the user, the password's first digits shown as its port)."""
    with pytest.raises(SettingsError, match="HTTPS_PROXY"):
        proxies = Settings.from_env({"HTTPS_PROXY": value}).network.proxies
        pytest.fail(f"taken as {proxies.https}")  # pragma: no cover


# --- secrets in what leaves a function ------------------------------------------------------------------------

PROXY_PASSWORD = "wr0ng-proxy-pass-77"


@pytest.mark.parametrize("function", ["continue_chunking", "ingest_chunk"])
def test_an_exception_leaving_a_trigger_carries_no_proxy_password(on_loop, functions, monkeypatch, function):
    """Expected (I5: no configured secret reaches ... a log record): an exception that leaves a trigger function is
    what the Python worker hands the Functions host as text (the host's log, Application Insights' exceptions),
    outside the app's log redactor; it carries no proxy password. Here storage is reached through an https proxy
    that refuses the app's credentials with 407: aiohttp's error names the proxy URL, password and all."""
    from core.storage import close_storage_clients
    from testkit.loopback_proxy import LoopbackProxy
    from testkit.storage_probe import set_app_env

    proxy = LoopbackProxy({"acct.blob.test": "127.0.0.1"}, credentials=("ops", "the-right-one")).start()
    endpoints = "BlobEndpoint=https://acct.blob.test:1/;QueueEndpoint=https://acct.queue.test:1/;"
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UFeWq2XlvKvhmQ5RzYCEQfWABSXzkYMfSmA=="
    set_app_env(monkeypatch, {
        "AzureWebJobsStorage": f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};{endpoints}",
        "HTTPS_PROXY": f"http://ops:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}", "STORAGE_MAX_RETRIES": "0",
        "SOURCE_URL": "http://127.0.0.1:9/ids",
    })  # fmt: skip
    for name in ("https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    import azure.functions as func

    if function == "continue_chunking":
        given = func.QueueMessage(body=json.dumps({"run_id": "leaky"}).encode())
    else:
        given = func.blob.InputStream(data=b'"id-1"\n', name="chunks/leaky/000001.jsonl", length=7)
    on_loop(close_storage_clients())
    try:
        with pytest.raises(Exception) as raised:
            on_loop(functions[function](given))
    finally:
        on_loop(close_storage_clients())
        proxy.stop()
    assert proxy.refused, "the proxy was not asked"
    shown = f"{type(raised.value).__name__}: {raised.value}\n{raised.getrepr()}"
    assert PROXY_PASSWORD not in shown, shown[:400]


def test_an_sdk_call_through_a_proxy_that_never_answers_connect_ends_within_the_storage_timeout(
    on_loop, functions, monkeypatch
):
    """Expected (I4: every function call returns within its bound; STORAGE_TIMEOUT bounds a storage call): behind a
    proxy that accepts the connection and never answers CONNECT (its upstream black-holed), the SDK's calls fail
    within about STORAGE_TIMEOUT, as the Put Message sender's do; the status route answers, here within 15 s with
    STORAGE_TIMEOUT=2 and no retries (aiohttp alone would wait for the CONNECT answer for ever)."""
    import socket

    from core.storage import close_storage_clients
    from testkit.http_requests import get_status
    from testkit.storage_probe import set_app_env

    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: [accepted.append(listener.accept()[0]) for _ in range(64)], daemon=True).start()
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UFeWq2XlvKvhmQ5RzYCEQfWABSXzkYMfSmA=="
    set_app_env(monkeypatch, {
        "AzureWebJobsStorage": f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};"
                               "BlobEndpoint=https://acct.blob.test:1/;QueueEndpoint=https://acct.queue.test:1/;",
        "HTTPS_PROXY": f"http://127.0.0.1:{listener.getsockname()[1]}", "STORAGE_MAX_RETRIES": "0",
        "STORAGE_TIMEOUT": "2", "SOURCE_URL": "http://127.0.0.1:9/ids",
    })  # fmt: skip
    for name in ("https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    on_loop(close_storage_clients())
    began = time.monotonic()
    try:
        on_loop(asyncio.wait_for(functions["get_ingestion_status"](get_status("behind-a-dead-proxy")), 45))
    except TimeoutError:
        pass
    except Exception:
        pass
    finally:
        took = time.monotonic() - began
        on_loop(close_storage_clients())
        for connection in accepted:
            connection.close()
        listener.close()
    assert accepted, "the proxy was not asked"
    assert took < 15, f"the call took {took:.0f} s (cut off at 45 s)"


# --- request ids in the chunk's error and the log ------------------------------------------------------------


def test_a_refused_put_message_keeps_its_request_ids_in_the_chunks_error_and_the_log(
    on_loop, functions, probe, app_env, caplog, monkeypatch
):
    """Expected (issue 21 item 2: 'a failure reason keeps the service's x-ms-request-id, error code and full message
    ... in the chunk's error and the log'): a chunk whose Put Message storage refuses (404 QueueNotFound: the target
    queue deleted under a running app) has a reason naming x-ms-request-id and x-ms-client-request-id in the app's
    log and in its chunk's error, which fails at once: no retry brings the queue back."""
    from fanout.serve import blob_input as chunk_blob

    monkeypatch.setenv("SOURCE_URL", os.environ["SOURCE_URL"].replace("count=10000", "count=100"))  # two chunks
    answer = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "refused-put", "chunk_size": 50})))
    assert answer.status_code in (200, 202), answer.get_body()
    first, second, *_ = probe.chunk_names("refused-put")
    for name in (first, second):
        download = probe.chunks.download_blob(name)
        blob = chunk_blob("chunks", name, download.readall(), download.properties.metadata)
        if name == second:
            probe.queue_client(app_env["QUEUE_NAME"]).delete_queue()
            with caplog.at_level(logging.INFO):
                on_loop(functions["ingest_chunk"](blob))  # no retry brings the queue back: the chunk fails
        else:
            on_loop(functions["ingest_chunk"](blob))
    status = status_of(on_loop, functions, "refused-put")
    for kept in (json.dumps(status["failed_chunks"]), caplog.text):
        assert "404 QueueNotFound" in kept and "x-ms-request-id" in kept and "x-ms-client-request-id" in kept, kept
    redriven = on_loop(functions["redrive_ingestion"](post_redrive("refused-put")))  # on this same warm process
    assert redriven.status_code in (200, 202), redriven.get_body()
    run_queued(on_loop, functions["redrive_chunk"], probe.queue_client(app_env["REDRIVE_QUEUE"]))
    assert status_of(on_loop, functions, "refused-put")["state"] == "completed"  # the queue made again
