"""Behind a corporate network: storage reachable only through a proxy, and servers signed by a private root CA.

One CA, made here, signs both Azurite's certificate and a loopback HTTPS source's; only SSL_CERT_FILE
trusts it. Storage is named by host names that do not resolve (`.test` is reserved): only the
proxy (testkit/loopback_proxy.py) maps it to Azurite, through CONNECT tunnels it counts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import Iterator

import pytest

from core.context import app_context
from core.settings import Settings
from core.storage import close_storage_clients
from core.webhook import deliver
from fanout.azurite import ACCOUNT, ACCOUNT_KEY, Azurite, start_azurite
from fanout.demo_api import demo_ids
from ingestion.target import target_sender
from testkit.http_requests import body_of, ingest_every_chunk, post_ingestion, status_of
from testkit.loopback_api import LoopbackApi
from testkit.loopback_proxy import LoopbackProxy
from testkit.private_ca import PrivateCa, private_ca
from testkit.storage_probe import StorageProbe, delete_queues, set_app_env

PROXIED = {service: f"{ACCOUNT}.{service}.proxied.test" for service in ("blob", "queue")}  # Azure's style
PROXY_USER, PROXY_PASSWORD = "ops", "s3cret-proxy-pass"
IDS = demo_ids(1000)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCa:
    return private_ca(tmp_path_factory.mktemp("ca"), tuple(PROXIED.values()))


@pytest.fixture(scope="module")
def tls_azurite(ca: PrivateCa) -> Iterator[Azurite]:
    instance = start_azurite(tls=(ca.certificate, ca.key))
    yield instance
    instance.close()


def tls_api(ca: PrivateCa) -> LoopbackApi:
    """An HTTPS source answering IDS, its certificate signed by `ca`."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(ca.certificate, ca.key)
    body = json.dumps(IDS).encode()
    return LoopbackApi(lambda path, headers: (200, {"Content-Type": "application/json"}, body), tls=tls)


@pytest.fixture(scope="module")
def tls_source(ca: PrivateCa) -> Iterator[LoopbackApi]:
    api = tls_api(ca)
    yield api
    api.stop()


@pytest.fixture
def proxy() -> Iterator[LoopbackProxy]:
    hosts = dict.fromkeys(PROXIED.values(), "127.0.0.1")
    instance = LoopbackProxy(hosts, credentials=(PROXY_USER, PROXY_PASSWORD)).start()
    yield instance
    instance.stop()


def proxied_connection_string(azurite: Azurite) -> str:
    """Azurite's account, its endpoints named by host names only the proxy knows."""
    endpoints = {"Blob": f"{PROXIED['blob']}:{azurite.blob_port}", "Queue": f"{PROXIED['queue']}:{azurite.queue_port}"}
    return f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};" + "".join(
        f"{service}Endpoint=https://{endpoint};" for service, endpoint in endpoints.items()
    )


@pytest.fixture
def network_env(on_loop, tls_azurite, tls_source, proxy, ca, monkeypatch) -> Iterator[dict[str, str]]:
    """A run's settings: an HTTPS source and HTTPS storage, both signed by the private CA, which SSL_CERT_FILE
    names; HTTPS_PROXY with credentials; the probe (requests, to 127.0.0.1) and the source bypass the proxy."""
    env = set_app_env(
        monkeypatch,
        {
            "SOURCE_URL": tls_source.url,
            "QUEUE_NAME": "proxied",
            "INGEST_CONCURRENCY": "8",
            "SSL_CERT_FILE": str(ca.ca_file),
            "REQUESTS_CA_BUNDLE": str(ca.ca_file),  # the probe's synchronous SDK clients
            "https_proxy": f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}",
            "NO_PROXY": "127.0.0.1",
        },
    )
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    on_loop(close_storage_clients())
    yield env
    on_loop(close_storage_clients())
    delete_queues(tls_azurite.connection_string, ["proxied"])


def run_everything(on_loop, functions, azurite: Azurite, run_id: str) -> StorageProbe:
    response = on_loop(functions["start_ingestion"](post_ingestion({"run_id": run_id, "chunk_size": 250})))
    assert response.status_code == 202, response.get_body()
    probe = StorageProbe(azurite.connection_string, "proxied")
    assert len(ingest_every_chunk(on_loop, functions, probe, run_id)) == 4
    assert status_of(on_loop, functions, run_id)["state"] == "completed"
    return probe


def test_a_whole_run_reaches_storage_only_through_the_proxy_in_few_tunnels(
    on_loop, functions, tls_azurite, proxy, network_env, monkeypatch, caplog
):
    monkeypatch.setenv("AzureWebJobsStorage", proxied_connection_string(tls_azurite))
    with caplog.at_level(logging.DEBUG):
        probe = run_everything(on_loop, functions, tls_azurite, "through-proxy")

    assert sorted(probe.drain()) == sorted(IDS)  # every ID, read back directly: nothing lost on the way
    tunnels = sum(proxy.tunnels.values())
    ports = {"blob": tls_azurite.blob_port, "queue": tls_azurite.queue_port}
    assert set(proxy.tunnels) == {f"{host}:{ports[service]}" for service, host in PROXIED.items()}
    assert 2 <= tunnels <= 2 * (8 + 4), proxy.tunnels  # the pools' connections at most, for 1,000+ requests
    assert proxy.refused == []
    assert proxy.authorizations and len(set(proxy.authorizations)) == 1 and proxy.authorizations[0].startswith("Basic")
    assert PROXY_PASSWORD not in caplog.text


def test_no_proxy_hosts_are_reached_directly(on_loop, tls_azurite, proxy, network_env, monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", tls_azurite.connection_string)  # 127.0.0.1, named in NO_PROXY

    async def send_some() -> None:
        send = await target_sender(await app_context())  # the SDK creates the containers and the queue
        await asyncio.gather(*(send(text) for text in IDS[:50]))

    on_loop(send_some())
    assert StorageProbe(tls_azurite.connection_string, "proxied").queue_length() == 50
    assert proxy.tunnels == {} and proxy.authorizations == []


def test_a_source_signed_by_a_ca_nothing_trusts_fails_the_run_at_once_naming_the_certificate(
    on_loop, functions, tls_azurite, network_env, monkeypatch, tmp_path
):
    untrusted = tls_api(private_ca(tmp_path, ()))  # SSL_CERT_FILE names the other CA only: storage's
    try:
        monkeypatch.setenv("AzureWebJobsStorage", tls_azurite.connection_string)
        monkeypatch.setenv("SOURCE_URL", untrusted.url)
        monkeypatch.setenv("SOURCE_MAX_ATTEMPTS", "5")
        response = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "untrusted-source"})))
    finally:
        untrusted.stop()

    assert response.status_code == 502
    detail = body_of(response)["detail"]
    assert "its certificate does not verify (unable to get local issuer certificate)" in detail
    assert "SSL_CERT_FILE" in detail and "Traceback" not in detail
    assert untrusted.accepted == 1  # not tried again: no retry makes a certificate trusted
    assert status_of(on_loop, functions, "untrusted-source")["state"] == "failed"


def test_the_webhook_trusts_what_ssl_cert_file_names_and_nothing_else(ca: PrivateCa, tmp_path):
    """The completion events' webhook verifies with the process's one trust store, as the source does."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(ca.certificate, ca.key)
    receiver = LoopbackApi(lambda path, headers: (200, {}, b""), tls=tls)
    event = {"run_id": "r", "state": "completed", "finished_at": "2026-01-01T00:00:00Z"}
    try:
        outcomes = {}
        for trusted, ca_file in (("named", ca.ca_file), ("other", private_ca(tmp_path, ()).ca_file)):
            settings = Settings.from_env({"RUN_EVENTS_WEBHOOK": receiver.url, "RUN_EVENTS_WEBHOOK_ATTEMPTS": "1",
                                          "SSL_CERT_FILE": str(ca_file)})  # fmt: skip
            outcomes[trusted] = asyncio.run(deliver(settings.webhook, event, settings.network))
    finally:
        receiver.stop()
    assert outcomes["named"].state == "delivered", outcomes
    assert outcomes["other"].state == "pending" and "CERTIFICATE_VERIFY_FAILED" in outcomes["other"].reason, outcomes
    assert len(receiver.posts) == 1


def test_an_http_source_and_webhook_go_through_http_proxy_in_absolute_form(
    on_loop, functions, azurite, app_env, monkeypatch
):
    """http:// URLs through `http_proxy` (a request line `GET http://host:port/path`, no tunnel), at names only the
    proxy knows; storage, at 127.0.0.1 in NO_PROXY, direct. Every ID arrives and the event is delivered."""
    body = json.dumps(IDS).encode()
    source = LoopbackApi(lambda path, headers: (200, {"Content-Type": "application/json"}, body))
    names = {"ids.source.test": "127.0.0.1", "hooks.source.test": "127.0.0.1"}
    proxy = LoopbackProxy(names, credentials=(PROXY_USER, PROXY_PASSWORD)).start()
    try:
        set_app_env(monkeypatch, {
            "AzureWebJobsStorage": azurite.connection_string, "QUEUE_NAME": "proxied",
            "SOURCE_URL": source.url.replace("127.0.0.1", "ids.source.test"),
            "RUN_EVENTS_WEBHOOK": source.url.replace("127.0.0.1", "hooks.source.test").replace("/ids", "/events"),
            "http_proxy": f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}", "NO_PROXY": "127.0.0.1",
        })  # fmt: skip
        for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        on_loop(close_storage_clients())
        probe = run_everything(on_loop, functions, azurite, "absolute-form")
        delivered = sorted(probe.drain())
    finally:
        on_loop(close_storage_clients())
        delete_queues(azurite.connection_string, ["proxied"])
        proxy.stop()
        source.stop()

    assert delivered == sorted(IDS)
    port = source.url.split(":")[2].split("/")[0]
    assert set(proxy.forwarded) == {f"ids.source.test:{port}", f"hooks.source.test:{port}"}, proxy.forwarded
    assert (
        proxy.tunnels == {}
        and proxy.refused == []
        and set(proxy.authorizations)
        == {"Basic " + base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()}
    )
    assert [json.loads(posted)["data"]["run_id"] for _, posted in source.posts] == ["absolute-form"]
