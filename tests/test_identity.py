"""Identity-based storage settings over HTTPS: Entra ID bearer tokens for the SDK and the lean sender.

Azurite serves HTTPS with a self-signed certificate and checks each token (`--oauth basic`); the
only stand-in is the token issuer (Entra ID is not reachable from a laptop's Azurite).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import pytest

from core.context import app_context
from core.errors import QueueSendError
from core.network import Network
from core.storage import close_storage_clients
from fanout.azurite import Azurite, start_azurite
from fanout.demo_api import DemoApi, demo_ids
from ingestion.target import partition_of, target_sender
from testkit.http_requests import body_of, get_status, ingest_every_chunk, post_ingestion
from testkit.local_entra import LocalEntraCredential, self_signed_certificate
from testkit.storage_probe import StorageProbe, set_app_env


@pytest.fixture(scope="module")
def tls_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    instance = start_azurite(tls=self_signed_certificate(tmp_path_factory.mktemp("tls")))
    yield instance
    instance.close()


@pytest.fixture
def credential(on_loop, tls_azurite: Azurite, demo_api: DemoApi, monkeypatch: pytest.MonkeyPatch):
    """Identity-based settings only (no connection string); the process trusts Azurite's certificate."""
    certificate = str(tls_azurite.tls[0])
    set_app_env(
        monkeypatch,
        {
            "AzureWebJobsStorage__blobServiceUri": tls_azurite.service_uri("blob"),
            "AzureWebJobsStorage__queueServiceUri": tls_azurite.service_uri("queue"),
            "SOURCE_URL": f"{demo_api.url}?count=3000",
            "QUEUE_NAME": f"ingest-{secrets.token_hex(6)}",
            "SSL_CERT_FILE": certificate,  # the ssl module (aiohttp, the lean sender)
            "REQUESTS_CA_BUNDLE": certificate,  # requests (the probe's synchronous SDK clients)
        },
    )
    issuer = LocalEntraCredential()
    monkeypatch.setattr(Network, "credential", lambda self, client_id: issuer)  # every credential the app makes
    on_loop(close_storage_clients())  # clients are cached per storage configuration: build them with this issuer
    yield issuer
    on_loop(close_storage_clients())


def probe_of(azurite: Azurite) -> StorageProbe:
    return StorageProbe(azurite.connection_string, os.environ["QUEUE_NAME"])


def test_the_pipeline_runs_on_bearer_tokens_over_https(on_loop, functions, tls_azurite, credential):
    response = on_loop(functions["start_ingestion"](post_ingestion({"run_id": "entra-3k", "chunk_size": 1000})))
    assert response.status_code == 202, response.get_body()
    probe = probe_of(tls_azurite)
    assert len(ingest_every_chunk(on_loop, functions, probe, "entra-3k")) == 3

    assert sorted(probe.drain()) == sorted(demo_ids(3000))
    assert body_of(on_loop(functions["get_ingestion_status"](get_status("entra-3k"))))["state"] == "completed"
    assert credential.issued >= 1


def test_the_lean_sender_renews_its_token_before_it_expires(on_loop, tls_azurite, credential):
    credential.lifetime = 2  # Azurite refuses a token once its `exp` has passed

    async def send_across_expiry() -> None:
        send = await target_sender(await app_context())
        await send("before")
        await asyncio.sleep(2.5)
        await send("after")

    on_loop(send_across_expiry())
    assert sorted(probe_of(tls_azurite).drain()) == ["after", "before"]


def test_a_token_storage_refuses_fails_the_send_with_its_reason(on_loop, tls_azurite, credential):
    async def send_with_wrong_audience() -> None:
        send = await target_sender(await app_context())  # the queue is created with a good token
        credential.audience = "https://vault.azure.net"
        await send("refused")

    with pytest.raises(QueueSendError, match=r"answered 403 AuthenticationFailed"):
        on_loop(send_with_wrong_audience())
    assert probe_of(tls_azurite).queue_length() == 0


def test_a_queue_account_given_by_uri_is_reached_by_identity(on_loop, tls_azurite, credential, monkeypatch):
    second = start_azurite(tls=tls_azurite.tls)  # the same certificate: the process trusts it already
    try:
        monkeypatch.setenv("QUEUE_ACCOUNTS", f"AzureWebJobsStorage,{second.service_uri('queue')}")
        ids = [f"id-{n}" for n in range(40)]

        async def send_all() -> None:
            send = await target_sender(await app_context())
            await asyncio.gather(*(send(text) for text in ids))

        on_loop(send_all())
        for account, azurite in enumerate((tls_azurite, second)):
            assert sorted(probe_of(azurite).drain()) == sorted(t for t in ids if partition_of(t, 2) == account)
    finally:
        on_loop(close_storage_clients())
        second.close()
