"""What every handler needs: settings, the process's storage clients, and the run store.

`app_context()` is the one place it is built: once per process and event loop for the environment as
it is (a changed environment, as in tests, gets a context of its own), its containers created once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from azure.storage.blob.aio import ContainerClient

from core.logs import configure_logs
from core.redact import Redactor
from core.run_store import RunStore
from core.settings import Settings
from core.storage import StorageClients, create_once, once_per_loop, storage_clients


@dataclass(frozen=True)
class Context:
    settings: Settings
    clients: StorageClients
    runs: RunStore
    chunk_container: ContainerClient

    def close(self) -> None:
        """Nothing of its own: its clients close with the loop's others (`close_storage_clients`)."""


async def app_context(settings: Settings | None = None) -> Context:
    """The context for the process's environment, or for `settings` when given (a CLI's, a benchmark's)."""
    if settings is None:
        environment = tuple(sorted(os.environ.items()))
        context = once_per_loop(("context", environment), lambda: _context(Settings.from_env()))
    else:
        context = _context(settings)
    settings = context.settings
    for container in (settings.runs_container, settings.chunk_container, settings.large_message_container):
        create = context.clients.blobs.get_container_client(container).create_container
        await create_once(settings.storage, f"container {container}", create)
    return context


def _context(settings: Settings) -> Context:
    clients = storage_clients(settings.storage, pool_size=settings.sdk_pool_size)
    configure_logs(Redactor(settings.secrets), settings.sdk_log_level)  # its secrets join the process's
    return Context(
        settings=settings,
        clients=clients,
        runs=RunStore(clients.blobs, settings.runs_container),
        chunk_container=clients.blobs.get_container_client(settings.chunk_container),
    )
