"""What every handler needs: settings, the process's storage clients, and the run store."""

from __future__ import annotations

from dataclasses import dataclass

from azure.storage.blob.aio import ContainerClient

from core.run_store import RunStore
from core.settings import Settings
from core.storage import StorageClients, create_once, storage_clients


@dataclass(frozen=True)
class Context:
    settings: Settings
    clients: StorageClients
    runs: RunStore
    chunks: ContainerClient


async def app_context(settings: Settings | None = None) -> Context:
    """Reads the settings (unless given) and makes sure the containers exist, once per process."""
    settings = settings or Settings.from_env()
    pool = max(settings.ingest_concurrency, settings.upload_concurrency) + 4
    clients = storage_clients(settings.storage, pool_size=pool)
    for container in (settings.runs_container, settings.chunk_container, settings.large_message_container):
        await create_once(
            settings.storage, f"container {container}", clients.blobs.get_container_client(container).create_container
        )
    return Context(
        settings=settings,
        clients=clients,
        runs=RunStore(clients.blobs, settings.runs_container),
        chunks=clients.blobs.get_container_client(settings.chunk_container),
    )
