"""The one place that builds storage clients, from a connection string or a managed identity.

Clients are async, share one aiohttp session sized to the send window, and are built once per
process (per storage configuration) on the event loop that first asks for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from azure.core.pipeline.transport import AioHttpTransport
from azure.identity.aio import DefaultAzureCredential
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueServiceClient

from fanout.settings import StorageConfig


@dataclass
class StorageClients:
    blobs: BlobServiceClient
    queues: QueueServiceClient
    session: aiohttp.ClientSession
    credential: DefaultAzureCredential | None

    async def close(self) -> None:
        await self.blobs.close()
        await self.queues.close()
        await self.session.close()
        if self.credential is not None:
            await self.credential.close()


_clients: dict[StorageConfig, StorageClients] = {}


def storage_clients(config: StorageConfig, pool_size: int = 100) -> StorageClients:
    """The process's clients for this storage; call from a coroutine (the session needs a loop)."""
    clients = _clients.get(config)
    if clients is None:
        clients = _clients[config] = _build(config, pool_size)
    return clients


async def close_storage_clients() -> None:
    while _clients:
        _, clients = _clients.popitem()
        await clients.close()


def _build(config: StorageConfig, pool_size: int) -> StorageClients:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=pool_size),
        trust_env=config.use_env_settings,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )

    def transport() -> AioHttpTransport:
        return AioHttpTransport(session=session, session_owner=False, use_env_settings=config.use_env_settings)

    if config.connection_string:
        blobs = BlobServiceClient.from_connection_string(config.connection_string, transport=transport())
        queues = QueueServiceClient.from_connection_string(config.connection_string, transport=transport())
        return StorageClients(blobs, queues, session, credential=None)
    credential = DefaultAzureCredential(managed_identity_client_id=config.client_id)
    blobs = BlobServiceClient(config.blob_service_uri, credential=credential, transport=transport())
    queues = QueueServiceClient(config.queue_service_uri, credential=credential, transport=transport())
    return StorageClients(blobs, queues, session, credential)
