"""The one place that builds storage clients, from a connection string or a managed identity.

Clients are async and built once per process for each storage configuration and event loop (the
Functions worker runs a single loop): `once_per_loop` keeps them, and anything else a stage builds
the same way (the Put Message sender's connection pool), until `close_storage_clients`. The SDK's
clients share one aiohttp session, sized to the send window, verifying with the process's one trust
store and going through the proxy `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` call for (core/network.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ssl
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiohttp
from azure.core.exceptions import ResourceExistsError
from azure.identity.aio import DefaultAzureCredential
from azure.storage.blob.aio import BlobServiceClient, ExponentialRetry
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from core.network import ProxiedTransport
from core.settings import StorageConfig

T = TypeVar("T", bound="Closable")


class Closable(Protocol):
    def close(self) -> Any: ...  # returns None, or an awaitable


@dataclass
class QueueClients:
    """A queue-only account's clients (a `QUEUE_ACCOUNTS` entry other than the app's own storage)."""

    queues: QueueServiceClient
    session: aiohttp.ClientSession
    credential: DefaultAzureCredential | None
    tls: ssl.SSLContext

    async def close(self) -> None:
        await self.queues.close()
        await self.session.close()
        if self.credential is not None:
            await self.credential.close()


@dataclass
class StorageClients(QueueClients):
    """The app's own storage: its queues and its blobs."""

    blobs: BlobServiceClient = field(kw_only=True)

    async def close(self) -> None:
        await self.blobs.close()
        await super().close()


_per_loop: dict[tuple[Hashable, asyncio.AbstractEventLoop], Closable] = {}


def once_per_loop(key: Hashable, build: Callable[[], T]) -> T:
    """What `build` makes, once per process and event loop; call from a coroutine."""
    loop_key = (key, asyncio.get_running_loop())
    built = _per_loop.get(loop_key)
    if built is None:
        built = _per_loop[loop_key] = build()
    return built  # type: ignore[return-value]


def storage_clients(config: StorageConfig, pool_size: int = 100) -> StorageClients:
    """The clients for this storage on the running loop; call from a coroutine."""
    return once_per_loop(("storage", config), lambda: _build(config, pool_size))


def queue_clients(config: StorageConfig, pool_size: int = 100) -> QueueClients:
    """The queue client of a queue-only account on the running loop; call from a coroutine."""
    return once_per_loop(("queues", config), lambda: _build_queues(config, pool_size))


_existing: set[tuple[StorageConfig, str]] = set()


async def create_once(config: StorageConfig, name: str, create: Callable[[], Awaitable[object]]) -> None:
    """Creates a container or queue the first time this process needs it; one that exists is fine."""
    if (config, name) in _existing:
        return
    with contextlib.suppress(ResourceExistsError):
        await create()
    _existing.add((config, name))


def forget_created(config: StorageConfig, name: str) -> None:
    """The container or queue may be gone (storage said so): the next `create_once` creates it again."""
    _existing.discard((config, name))


async def trigger_queue(queues: QueueServiceClient, config: StorageConfig, name: str) -> QueueClient:
    """A queue that a Functions queue trigger reads: base64 messages (the trigger's default), created once."""
    queue = queues.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())
    await create_once(config, f"queue {name}", queue.create_queue)
    return queue


async def close_storage_clients() -> None:
    """Closes everything `once_per_loop` built on the running loop."""
    loop = asyncio.get_running_loop()
    for key in [key for key in _per_loop if key[1] is loop]:
        closed = _per_loop.pop(key).close()
        if inspect.isawaitable(closed):
            await closed


def _session(config: StorageConfig, pool_size: int) -> tuple[aiohttp.ClientSession, ssl.SSLContext]:
    tls = config.network.tls
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=pool_size, ssl=tls),
        trust_env=False,  # the proxy comes from ProxiedTransport, decided once per origin
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )
    return session, tls


class _TunnelBounded:
    """The session, as the SDK's transport uses it, each request through a proxy given `connect` seconds to have
    its connection: the SDK bounds the TCP connect and each read, not the proxy's answer to CONNECT, for which
    aiohttp would wait for ever."""

    def __init__(self, session: aiohttp.ClientSession, connect: float) -> None:
        self._session = session
        self._connect = connect

    def request(self, method: str, url: str, *, timeout: aiohttp.ClientTimeout, **kwargs: Any) -> Any:
        if kwargs.get("proxy") is not None:
            timeout = aiohttp.ClientTimeout(sock_connect=timeout.sock_connect, sock_read=timeout.sock_read,
                                            connect=self._connect)  # fmt: skip
        return self._session.request(method, url, timeout=timeout, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def _options(config: StorageConfig, session: aiohttp.ClientSession) -> dict[str, Any]:
    """The SDK's own retry policy, configured: backs off on 500/503 "server busy" and timeouts."""
    bounded = _TunnelBounded(session, 2 * config.timeout)  # reaching the proxy, then its answer to CONNECT
    return {
        "transport": ProxiedTransport(config.network.proxies, session=bounded, session_owner=False),
        # The async storage retry policy (the queue package does not export its identical copy).
        "retry_policy": ExponentialRetry(
            initial_backoff=config.retry_backoff, increment_base=2, retry_total=config.max_retries,  # type: ignore[arg-type]
            random_jitter_range=config.retry_backoff / 2,  # type: ignore[arg-type]
        ),
        "connection_timeout": config.timeout,
        "read_timeout": config.timeout,
    }  # fmt: skip


def _credential(config: StorageConfig) -> DefaultAzureCredential | None:
    return None if config.connection_string else config.network.credential(config.client_id)


def _queue_service(
    config: StorageConfig, session: aiohttp.ClientSession, credential: DefaultAzureCredential | None
) -> QueueServiceClient:
    if config.connection_string:
        return QueueServiceClient.from_connection_string(config.connection_string, **_options(config, session))
    assert config.queue_service_uri  # Settings requires it for identity
    return QueueServiceClient(config.queue_service_uri, credential=credential, **_options(config, session))


def _build(config: StorageConfig, pool_size: int) -> StorageClients:
    session, tls = _session(config, pool_size)
    credential = _credential(config)
    if config.connection_string:
        blobs = BlobServiceClient.from_connection_string(config.connection_string, **_options(config, session))
    else:
        assert config.blob_service_uri  # Settings requires it for identity
        blobs = BlobServiceClient(config.blob_service_uri, credential=credential, **_options(config, session))
    return StorageClients(_queue_service(config, session, credential), session, credential, tls, blobs=blobs)


def _build_queues(config: StorageConfig, pool_size: int) -> QueueClients:
    session, tls = _session(config, pool_size)
    credential = _credential(config)
    return QueueClients(_queue_service(config, session, credential), session, credential, tls)
