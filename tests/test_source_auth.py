"""Sources that need a bearer token (SOURCE_AUTH): a loopback token issuer hands out tokens that live about a
second, a paged source refuses an expired or unknown one with 401 (echoing it back), and a run spans several
token lifetimes and a continuation. Every ID lands in the queue; the token endpoint is called a bounded number
of times; no token reaches a blob, a continuation, a status, a problem answer or a log line."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator

import pytest
from azure.storage.blob import BlobServiceClient

from fanout.demo_api import DemoApi, Faults, demo_ids
from testkit.http_requests import ingest_every_chunk, post_ingestion, run_queued, status_of
from testkit.token_issuer import IDENTITY_HEADER, TokenIssuer, signed_in_source

CLIENT_ID = "fanout-client"
CLIENT_SECRET = "cs~Q8v.2kLm_9TzXr4Wn"
PAGE = 30


class Source:
    """A paged source that lets a request through only with a token the issuer says is good; counts 401s."""

    def __init__(self, issuer: TokenIssuer, count: int, delay: float) -> None:
        self.refused = 0

        def authorize(header: str | None) -> bool:
            if issuer.accepts(header):
                return True
            self.refused += 1
            return False

        self.api = DemoApi(count, faults=Faults(delay=delay), pagination="cursor", page_size=PAGE,
                           authorize=authorize).start()  # fmt: skip


@pytest.fixture
def oauth2(app_env, monkeypatch) -> Iterator[Callable[..., tuple[TokenIssuer, Source]]]:
    """An issuer and a source, and the settings of `oauth2-client-credentials` pointing at both."""
    made: list[tuple[TokenIssuer, Source]] = []

    def make(count: int = 300, delay: float = 0.0, lifetime: float = 1.0, **issuer_options: float):
        issuer = TokenIssuer(CLIENT_ID, CLIENT_SECRET, lifetime, **issuer_options)
        source = Source(issuer, count, delay)
        made.append((issuer, source))
        settings = signed_in_source(source.api.url, issuer.token_url, CLIENT_ID, CLIENT_SECRET)
        for key, value in {**settings, "SOURCE_SCOPE": "ids.read"}.items():
            monkeypatch.setenv(key, value)
        return issuer, source

    yield make
    for issuer, source in made:
        source.api.stop()
        issuer.stop()


def chunk_to_the_end(on_loop, functions, probe, run_id: str) -> list[bytes]:
    """Starts the run, hands each continuation on as the host would until chunking ends; the continuations."""
    handed_on: list[bytes] = []
    control = probe.queue_client(os.environ["CONTROL_QUEUE"])
    started = on_loop(functions["start_ingestion"](post_ingestion({"run_id": run_id})))
    assert started.status_code in (200, 202, 502), started.get_body()

    def carry_on(message) -> None:
        handed_on.append(message.get_body())
        return functions["continue_chunking"](message)

    while status_of(on_loop, functions, run_id)["state"] == "chunking":
        assert run_queued(on_loop, carry_on, control) >= 1  # each, and those it hands on
    return handed_on


def chunked_ids(probe, run_id: str) -> list[str]:
    """The IDs of the run's chunk blobs, in order (the queue's side is the main test's)."""
    lines = [probe.chunks.download_blob(name).readall().decode().splitlines() for name in probe.chunk_names(run_id)]
    return [json.loads(line) for chunk in lines for line in chunk]


def blobs_of(probe, run_id: str) -> list[bytes]:
    """Every blob the run wrote: its chunks and its records."""
    service = BlobServiceClient.from_connection_string(probe.connection_string)
    found = []
    for container in ("chunks", "ingestion-runs"):
        client = service.get_container_client(container)
        found += [client.download_blob(blob).readall() for blob in client.list_blob_names(name_starts_with=run_id)]
    return found


def assert_no_token_in(issuer: TokenIssuer, texts: list[bytes | str]) -> None:
    for token in issuer.issued:
        for text in texts:
            assert token not in (text.decode() if isinstance(text, bytes) else text)


def test_a_paged_run_across_token_lifetimes_and_a_continuation_lands_every_id_and_no_token(
    on_loop, functions, probe, oauth2, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    issuer, source = oauth2(count=300, delay=0.25, lifetime=1.0)  # 10 pages, ~3 s: several lifetimes
    monkeypatch.setenv("CHUNKING_TIME_BUDGET", "1.2")
    began = time.monotonic()

    continuations = chunk_to_the_end(on_loop, functions, probe, "oauth2-run")
    took = time.monotonic() - began
    ingest_every_chunk(on_loop, functions, probe, "oauth2-run")

    assert sorted(probe.drain()) == sorted(demo_ids(300))
    status = status_of(on_loop, functions, "oauth2-run")
    assert status["state"] == "completed", status
    assert continuations, "the run must have been handed on at least once"
    # renewed before expiry (three quarters into its life): none refused (one, if the machine stalled past a
    # renewal's quarter second; without renewal one a lifetime), and fetched a bounded number of times
    assert took > 3 * issuer.lifetime
    assert source.refused <= 1
    assert 3 <= issuer.calls <= took / (0.75 * issuer.lifetime) + 2
    assert all(form["scope"] == ["ids.read"] for form in issuer.forms)
    assert_no_token_in(issuer, [*continuations, *blobs_of(probe, "oauth2-run"), json.dumps(status), caplog.text])


def test_a_token_the_source_refuses_before_its_time_is_renewed_once_per_refusal(on_loop, functions, probe, oauth2):
    # The issuer says an hour; its tokens die after 0.5 s: every renewal is a 401's, one fetch each.
    issuer, source = oauth2(count=300, delay=0.1, lifetime=0.5, advertised=3600)

    chunk_to_the_end(on_loop, functions, probe, "oauth2-early")

    assert chunked_ids(probe, "oauth2-early") == demo_ids(300)
    assert source.refused >= 1
    assert issuer.calls == source.refused + 1


def test_a_source_refusing_even_a_fresh_token_fails_the_run_after_one_renewal_without_showing_it(
    on_loop, functions, probe, oauth2, caplog
):
    caplog.set_level(logging.DEBUG)
    issuer, source = oauth2(count=300)
    source.api.authorize = lambda header: False  # refuses every token, echoing it in its 401 body

    answer = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "oauth2-refused"})))
    status = status_of(on_loop, functions, "oauth2-refused")

    assert answer.status_code == 502
    assert status["state"] == "failed"
    assert "answered 401" in status["error"] and "to a token renewed after a 401" in status["error"]
    assert "[redacted]" in status["error"]
    assert issuer.calls == 2  # the first token, and one renewal
    assert_no_token_in(issuer, [answer.get_body(), json.dumps(status), caplog.text, *blobs_of(probe, "oauth2-refused")])


@pytest.mark.parametrize(
    ("fault", "settings", "calls", "reason"),
    [
        ({"fail_with": 503}, {"SOURCE_MAX_ATTEMPTS": "3"}, 3, "SOURCE_TOKEN_URL) answered 503"),
        ({"hang": 1.0}, {"SOURCE_MAX_ATTEMPTS": "2", "SOURCE_TIMEOUT": "0.2"}, 2, "SOURCE_TOKEN_URL) failed"),
        ({"client_secret": "another-secret-9"}, {}, 1, "invalid_client"),
    ],
)
def test_a_token_endpoint_that_fails_hangs_or_refuses_fails_the_run_visibly_and_boundedly(
    on_loop, functions, probe, oauth2, monkeypatch, fault, settings, calls, reason
):
    issuer, _ = oauth2(count=300)
    for key, value in fault.items():
        setattr(issuer, key, value)
    for key, value in settings.items():
        monkeypatch.setenv(key, value)

    began = time.monotonic()
    run_id = f"no-token-{secrets.token_hex(4)}"
    answer = on_loop(functions["start_ingestion"](post_ingestion({"run_id": run_id})))

    assert time.monotonic() - began < 5
    status = status_of(on_loop, functions, run_id)
    assert answer.status_code == 502 and status["state"] == "failed"
    assert reason in status["error"]
    assert CLIENT_SECRET not in status["error"] and CLIENT_SECRET not in answer.get_body().decode()
    assert issuer.calls == calls


def test_entra_signs_in_as_the_apps_identity_and_gets_a_fresh_token_after_a_401(
    on_loop, functions, probe, oauth2, monkeypatch
):
    # azure-identity's own cache would hand back the token the source refused (the issuer says it lasts an hour)
    issuer, source = oauth2(count=300, delay=0.1, lifetime=0.5, advertised=3600)
    for key in ("SOURCE_TOKEN_URL", "SOURCE_CLIENT_SECRET"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("SOURCE_AUTH", "entra")
    monkeypatch.setenv("SOURCE_SCOPE", "api://ids-source/.default")
    monkeypatch.setenv("IDENTITY_ENDPOINT", issuer.identity_endpoint)  # App Service's managed identity
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)

    chunk_to_the_end(on_loop, functions, probe, "entra-run")

    assert chunked_ids(probe, "entra-run") == demo_ids(300)
    assert source.refused >= 1
    assert issuer.calls == source.refused + 1


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SOURCE_AUTH": "oauth2-client-credentials", "SOURCE_CLIENT_ID": "c", "SOURCE_CLIENT_SECRET": "s"},
         "SOURCE_TOKEN_URL"),
        ({"SOURCE_AUTH": "bearer"}, "SOURCE_AUTH must be one of none, oauth2-client-credentials, entra"),
        ({"SOURCE_CRM__URL": "http://127.0.0.1:9/ids", "SOURCE_CRM__AUTH": "entra"}, "SOURCE_CRM__SCOPE"),
    ],
)  # fmt: skip
def test_bad_auth_settings_answer_a_problem_naming_the_setting(on_loop, functions, app_env, monkeypatch, env, named):
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    answer = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "bad-auth"})))

    assert answer.status_code == 500
    assert answer.mimetype == "application/problem+json"
    assert named in json.loads(answer.get_body())["detail"]


def test_a_named_source_signs_in_with_its_own_settings_and_the_default_source_with_none(
    on_loop, functions, probe, oauth2, monkeypatch
):
    """SOURCE_<NAME>__AUTH and its companions sign in the named source alone: its run lands every ID through
    its tokens, while the default source, with no SOURCE_AUTH, is read without one."""
    issuer, source = oauth2(count=120, lifetime=30.0)
    for key in ("URL", "AUTH", "TOKEN_URL", "CLIENT_ID", "CLIENT_SECRET", "SCOPE", "PAGINATION", "ITEMS_PATH",
                "CURSOR_PATH"):  # fmt: skip
        monkeypatch.setenv(f"SOURCE_PARTNER__{key}", os.environ[f"SOURCE_{key}"])
        if key not in ("URL", "PAGINATION", "ITEMS_PATH", "CURSOR_PATH"):
            monkeypatch.delenv(f"SOURCE_{key}")
    open_source = DemoApi(40).start()
    monkeypatch.setenv("SOURCE_URL", open_source.url)  # the default source: no sign-in
    for key in ("PAGINATION", "ITEMS_PATH", "CURSOR_PATH"):
        monkeypatch.delenv(f"SOURCE_{key}")
    try:
        partner = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "partner-run", "source": "partner"})))
        default = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "open-run"})))
        ingest_every_chunk(on_loop, functions, probe, "partner-run")
        ingest_every_chunk(on_loop, functions, probe, "open-run")
    finally:
        open_source.stop()
    assert (partner.status_code, default.status_code) == (202, 202), (partner.get_body(), default.get_body())
    assert status_of(on_loop, functions, "partner-run")["messages"]["enqueued"] == 120
    assert status_of(on_loop, functions, "open-run")["messages"]["enqueued"] == 40
    assert issuer.issued and source.refused == 0  # every page asked with a token the issuer gave
    assert len(probe.consume()) == 160
