"""How the process reaches the network, read once at start-up: its proxies and its one trust store.

Storage (the SDK's aiohttp session and the Put Message sender) and the httpx clients (the source reader, its
token endpoint, the completion events' webhook) verify
certificates with the same `ssl` context: the system store (on Linux OpenSSL's default paths, where
`update-ca-certificates` puts a corporate root CA), or only the PEM bundle `SSL_CERT_FILE` names. httpx
alone would trust certifi's bundle instead, so a root CA that storage trusted was refused by the source.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field
from typing import Any

from azure.core.pipeline.transport import AioHttpTransport
from azure.identity.aio import DefaultAzureCredential

from core.proxy import Proxies


@dataclass(frozen=True)
class Network:
    proxies: Proxies = field(default_factory=Proxies)
    ca_file: str | None = None  # SSL_CERT_FILE: trusted instead of the system store

    @property
    def tls(self) -> ssl.SSLContext:
        return trust_store(self.ca_file)

    def credential(self, client_id: str | None) -> DefaultAzureCredential:
        """The app's identity (a managed identity in Azure, a developer's sign-in locally), its token requests sent
        by this network's proxy rule: azure-identity alone would read the environment again, with urllib's NO_PROXY
        matcher (no CIDR, no `*.`), and could send the identity endpoint's requests to the proxy."""
        return DefaultAzureCredential(managed_identity_client_id=client_id, transport=ProxiedTransport(self.proxies))

    def httpx_options(self, url: str) -> dict[str, Any]:
        """An httpx client's trust and proxy for calls to `url`'s origin (the environment is never read again)."""
        proxy = self.proxies.for_url(url)
        return {"verify": self.tls, "proxy": proxy.url if proxy else None, "trust_env": False}


@functools.cache
def trust_store(ca_file: str | None) -> ssl.SSLContext:
    """One TLS context per process and CA file (loading a store takes ~50 ms of CPU), shared by every client."""
    return ssl.create_default_context(cafile=ca_file)


class ProxiedTransport(AioHttpTransport):  # type: ignore[misc]
    """The SDK's aiohttp transport, each request sent through the proxy its origin calls for (core/proxy.py),
    decided once per origin: neither it nor aiohttp reads the environment per request."""

    def __init__(self, proxies: Proxies, **kwargs: Any) -> None:
        super().__init__(use_env_settings=False, **kwargs)
        self._proxies = proxies
        self._routes: dict[str, dict[str, str] | None] = {}  # origin: the `proxies` the transport is given

    async def send(self, request: Any, *, proxies: Any = None, **config: Any) -> Any:
        scheme, _, rest = str(request.url).partition("://")
        origin = f"{scheme}://{rest.partition('/')[0]}"
        if origin not in self._routes:
            proxy = self._proxies.for_url(origin)
            self._routes[origin] = {origin: proxy.url} if proxy else None
        return await super().send(request, proxies=proxies or self._routes[origin], **config)
